"""Moving bytes into a partial download of this attempt's own -- HTTP(S) with resume and retries, or a local copy --
handed over complete with the digest of its bytes (checking it and renaming that very file into place is
:mod:`.obtain`'s job).

* Ownership: each attempt writes a new file, and only that one. An earlier attempt's partial download of the same URL
  that no live process owns (:func:`.cache.in_use`) is taken by an atomic rename and its bytes copied into this
  attempt's file: never appended to in place, since its writer may be alive after all.
* Resume: ``Range`` with ``If-Range`` (the strong ETag or Last-Modified date its bytes came with), so a file changed
  upstream is sent whole instead of spliced; the byte count is checked against Content-Length or Content-Range.
* Retries: urllib3's ``Retry``, as configured (``RESNEST_ZOO_RETRIES``, backoff ``RESNEST_ZOO_RETRY_DELAY``,
  ``Retry-After`` honoured), re-sends a request that failed before its body (connection errors, timeouts, HTTP 5xx,
  408, 429). A body that breaks off is continued with a Range request, which ``Retry`` cannot do: a loop of our own
  with the same count, reset by an attempt that received bytes.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import random
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .. import environment, options
from ..files import atomic_write
from ..progress import progress_bar
from . import cache
from .integrity import hash_file

__all__ = ["RetryPolicy", "TransferError", "Received", "http_session", "get", "describe_request_error", "fetch_url",
           "copy_file"]

USER_AGENT = "resnest_zoo (+https://github.com/SegmentationBLWX/sssegmentation checkpoints)"
RETRY_STATUS = frozenset({408, 429, *range(500, 600)})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a download tries: ``retries`` further attempts after a failure, waiting ``delay`` times 0, 2, 4, 8 ...
    seconds (at most ``max_delay``); ``timeout`` seconds to connect and, while reading, between two packets, so a slow
    server that keeps sending is never cut off."""

    retries: int = options.RETRIES
    delay: float = options.RETRY_DELAY
    max_delay: float = options.MAX_RETRY_DELAY
    timeout: float = options.TIMEOUT

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The defaults, overridden by ``RESNEST_ZOO_RETRIES``, ``RESNEST_ZOO_RETRY_DELAY``, ``RESNEST_ZOO_TIMEOUT``."""
        return cls(retries=int(environment.number(environment.RETRIES, cls.retries, int)),
                   delay=environment.number(environment.RETRY_DELAY, cls.delay),
                   timeout=environment.number(environment.TIMEOUT, cls.timeout, minimum=0.001))


class TransferError(Exception):
    """A source could not supply the file; ``reason`` is one line saying why (HTTP 404, DNS, timeout ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BodyBroken(TransferError):
    """The answer's body stopped short or broke off: worth continuing with a Range request."""


@dataclass(frozen=True)
class Received:
    """A complete file: its path, the digest and size of its bytes (size None: not comparable with the published
    file's), and whether it is ``kept`` in another library's cache (never moved or deleted) rather than ours."""

    path: Path
    sha256: str
    size: int | None
    kept: bool = False


def http_session(policy: RetryPolicy) -> requests.Session:
    """A session that retries as ``policy`` says (module docstring) and names this package."""
    retry = Retry(total=policy.retries, other=0, backoff_factor=policy.delay, backoff_max=policy.max_delay,
                  backoff_jitter=policy.delay / 5, status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET"}),
                  raise_on_status=False, respect_retry_after_header=True)
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


_FAILURES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (  # the first one any wrapped exception is
    ((socket.gaierror, urllib3.exceptions.NameResolutionError),
     "DNS lookup failed for host {host!r} (no network, or a wrong host name)"),
    ((ConnectionRefusedError,), "connection refused by {host}"),
    ((ConnectionResetError,), "connection reset by the server"),
    ((TimeoutError, requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError),  # (not NewConnectionError)
     "timed out (no answer within {timeout:g} s)"),
    ((http.client.IncompleteRead, urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError),
     "connection closed before the end of the body"),
    ((ssl.SSLError, requests.exceptions.SSLError), "TLS/SSL error talking to {host}"),
    ((requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema),
     "invalid URL {url!r}"),
)


def describe_request_error(exc: BaseException, url: str, timeout: float) -> str:
    """One line saying why a request failed, read from the types of ``exc`` and of everything it wraps."""
    chain: list[BaseException] = []
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if isinstance(current, BaseException) and not any(current is seen for seen in chain):
            chain.append(current)
            stack += [*current.args, current.__cause__, current.__context__, getattr(current, "reason", None)]
    for types, reason in _FAILURES:
        if any(isinstance(e, types) for e in chain):
            return reason.format(host=urllib3.util.parse_url(url).host or url, url=url, timeout=timeout)
    return f"connection error ({next((e.strerror for e in chain if getattr(e, 'strerror', None)), type(exc).__name__)})"


def _gave_up(attempts: int) -> str:
    return f" (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"


def get(session: requests.Session, url: str, policy: RetryPolicy,
        headers: dict[str, str] | None = None) -> requests.Response:
    """GET ``url`` (streamed) through the retrying ``session``; a failure that the retries did not cure raises
    :class:`TransferError` saying why and after how many attempts. Other HTTP errors are the caller's."""
    try:
        response = session.get(url, headers=headers, stream=True, timeout=(policy.timeout, policy.timeout))
    except requests.exceptions.RequestException as exc:
        retried = isinstance(exc, (requests.ConnectionError, requests.Timeout)) and not isinstance(
            exc, requests.exceptions.SSLError)
        raise TransferError(describe_request_error(exc, url, policy.timeout)
                            + (_gave_up(policy.retries + 1) if retried else "")) from None
    if response.status_code in RETRY_STATUS:
        history = response.raw.retries.history if getattr(response.raw, "retries", None) else ()
        response.close()
        raise TransferError(f"HTTP {response.status_code} {response.reason or ''}".rstrip()
                            + _gave_up(1 + sum(1 for h in history if h.redirect_location is None)))
    return response


class _Download:
    """One attempt's partial file -- started from an abandoned attempt's bytes when one can be taken -- its running
    digest, the note beside it saying where its bytes came from, and the requests that complete it."""

    def __init__(self, url: str, target: Path, policy: RetryPolicy, expected_size: int | None, size_from: str) -> None:
        self.url, self.policy, self.expected_size, self.size_from = url, policy, expected_size, size_from
        self.path, self.handle = cache.new_partial(target)
        self.hasher, self.total, self.validator = hashlib.sha256(), None, None
        for candidate in cache.partials(target):  # an attempt of this URL that noted its validator, and is let go
            try:
                note = json.loads(cache.note_path(candidate).read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                continue
            usable = isinstance(note, dict) and note.get("url") == url and note.get("validator")
            claimed = cache.claim(target, candidate) if usable and not cache.in_use(candidate) else None
            if claimed is not None:  # ours now; its writer, if alive, writes on into a file that nobody reads
                self.hasher = hash_file(claimed, into=self.handle)
                cache.remove([claimed, cache.note_path(candidate)])
                self.note(note.get("total"), note["validator"])
                break
        self.size = self.handle.tell()
        self.resumed = self.size > 0

    def note(self, total: int | None, validator: str | None) -> None:
        """Note the file's size and validator (for ``If-Range``) beside it."""
        self.total, self.validator = total, validator
        with atomic_write(cache.note_path(self.path)) as temporary:
            temporary.write_text(json.dumps({"url": self.url, "validator": validator, "total": total}))

    def restart(self) -> None:
        """Start again from byte 0, in the same file."""
        self.handle.seek(0)
        self.handle.truncate()
        self.hasher, self.size, self.total, self.validator = hashlib.sha256(), 0, None, None

    def attempt(self, session: requests.Session, bar: Any) -> None:
        """One request: continue the partial file from where it ends to the end of the answer."""
        headers = {"Accept-Encoding": "identity"}
        if self.size:
            headers["Range"] = f"bytes={self.size}-"
            headers.update({"If-Range": self.validator} if self.validator else {})
        with get(session, self.url, self.policy, headers) as response:
            status, length = response.status_code, response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            if status == 206:
                span, _, whole = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
                if span.split("-")[0] != str(self.size):
                    self.restart()
                    raise _BodyBroken(f"server answered a range request with Content-Range "
                                      f"{response.headers.get('Content-Range')!r}; starting again from byte 0")
                total = int(whole) if whole.isdigit() else None
            elif status in (200, 416) and self.size:  # the range was ignored, or the file changed (If-Range)
                self.restart()
                if status == 416:
                    raise _BodyBroken("HTTP 416 Range Not Satisfiable for the partial file; starting again from byte 0")
                if not bar.disable:
                    bar.write(f"{bar.desc}: the server sent the whole file again; starting from 0", file=sys.stderr)
            elif status != 200:
                raise TransferError(f"HTTP {status} {response.reason or ''}".rstrip())
            if self.expected_size is not None and total is not None and total != self.expected_size:
                raise TransferError(f"the server's file is {total} bytes, {self.size_from} says {self.expected_size}")
            etag = response.headers.get("ETag", "")
            self.note(total, etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified"))
            bar.total, bar.n = total, self.size
            bar.refresh()
            try:
                for chunk in response.iter_content(64 * 1024):  # small reads: what was received is kept on a break
                    self.write(chunk)
                    bar.update(len(chunk))
            except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                    OSError) as exc:
                raise _BodyBroken(f"transfer interrupted after {self.size} of {total or '?'} bytes "
                                  f"({describe_request_error(exc, self.url, self.policy.timeout)})") from None
        if total is not None and self.size != total:
            raise _BodyBroken(f"the body ended after {self.size} of {total} bytes")

    def write(self, chunk: bytes) -> None:
        try:
            self.handle.write(chunk)
        except OSError as exc:
            raise TransferError(f"cannot write {self.path} ({exc.strerror or exc})") from None
        self.hasher.update(chunk)
        self.size += len(chunk)

    def finish(self, complete: bool) -> Received:
        """Close the file: a complete one is handed over, an incomplete one let go for the next attempt (or removed
        when it holds nothing)."""
        self.handle.close()
        if complete or not self.size:
            cache.remove([cache.note_path(self.path), *([] if complete else [self.path])])
        else:
            cache.let_go(self.path)
        return Received(self.path, self.hasher.hexdigest(), self.size)


def _mib(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:.1f} MiB"


def fetch_url(url: str, target: Path, *, policy: RetryPolicy, progress: bool, label: str,
              expected_size: int | None = None, size_from: str = "the catalogue") -> Received:
    """Download ``url`` into a partial file of this attempt's own (continuing an abandoned attempt's bytes when one
    can be taken) and return it complete, with the digest of its bytes.

    Raises :class:`TransferError` with a one-line reason when the source cannot supply the file; the partial file is
    then let go, so that the next attempt continues it.
    """
    try:
        download = _Download(url, target, policy, expected_size, size_from)
    except OSError as exc:
        raise TransferError(f"cannot write in {target.parent} ({exc.strerror or exc})") from None
    complete, failures, attempts = False, 0, 0
    bar = progress_bar(download.total, desc=label, unit="B", enabled=progress, unit_scale=True, unit_divisor=1024,
                       initial=download.size, miniters=1)
    if download.resumed and progress:
        bar.write(f"{label}: continuing an interrupted download at {_mib(download.size)} of {_mib(download.total)}",
                  file=sys.stderr)
    try:
        with http_session(policy) as session:
            while not complete:
                before, attempts = download.size, attempts + 1
                try:
                    download.attempt(session, bar)
                    complete = True
                except _BodyBroken as exc:
                    failures = 1 if download.size > before else failures + 1  # progress resets the count
                    if failures > policy.retries:
                        raise TransferError(exc.reason + _gave_up(attempts)) from None
                    if progress:
                        bar.write(f"{label}: {exc.reason}; resuming at {_mib(download.size)} of "
                                  f"{_mib(download.total)}", file=sys.stderr)
                    time.sleep(min(policy.max_delay, policy.delay * 2 ** (failures - 1) if failures > 1 else 0)
                               * random.uniform(0.8, 1.2))  # urllib3's schedule, jittered
    finally:
        bar.close()
        received = download.finish(complete)
    return received


def copy_file(source: Path, target: Path, *, progress: bool, label: str) -> Received:
    """Copy a local file (a mirror folder) into a new partial file of ``target``, hashing it on the way."""
    try:
        path, handle = cache.new_partial(target)
    except OSError as exc:
        raise TransferError(f"cannot write in {target.parent} ({exc.strerror or exc})") from None
    try:
        with handle, progress_bar(source.stat().st_size, desc=label, unit="B", enabled=progress, unit_scale=True,
                                  unit_divisor=1024) as bar:
            digest = hash_file(source, into=handle, on_chunk=bar.update)
    except BaseException:
        cache.remove([path])
        raise
    return Received(path, digest.hexdigest(), path.stat().st_size)
