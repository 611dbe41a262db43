"""Moving bytes into a partial download of this attempt's own: HTTP(S) with resume and retries, or a local copy.

:func:`fetch_url` and :func:`copy_file` return the complete file under its temporary name with the digest of the
bytes written into it; checking that digest and renaming that very file into place is :mod:`.obtain`'s job.

* Ownership: each attempt writes a new file with a random name, and only that one. An earlier attempt's partial
  download of the same URL that no live process owns (:func:`.cache.in_use`) is taken by an atomic rename and its
  bytes are copied into this attempt's file: never appended to in place, since its writer may be alive after all.
* Resume: ``Range: bytes=N-`` with ``If-Range`` (the strong ETag or Last-Modified date the partial came with), so a
  file changed upstream is sent whole instead of spliced.
* Retries: urllib3's ``Retry``, as configured (``RESNEST_ZOO_RETRIES``, backoff ``RESNEST_ZOO_RETRY_DELAY``,
  ``Retry-After`` honoured), re-sends a request that failed before its body: connection errors, timeouts, HTTP 5xx,
  408 and 429. A body that breaks off is continued by a new request with ``Range``, which ``Retry`` cannot do, so
  that part is a loop of our own with the same count (an attempt that received bytes resets it).
* Completeness: the byte count is checked against Content-Length (or Content-Range's total).
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
NETWORK_CHUNK = 64 * 1024  # small reads: bytes already received are kept when a connection breaks


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a download tries: ``retries`` further attempts after a failure, waiting ``delay`` times 0, 2, 4, 8 ...
    seconds (urllib3's schedule, at most ``max_delay``); ``timeout`` seconds to connect and, while reading, between
    two packets, so a slow server that keeps sending is never cut off."""

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

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th broken body in a row: urllib3's schedule, jittered."""
        return min(self.max_delay, self.delay * 2 ** (failures - 1) if failures > 1 else 0) * random.uniform(0.8, 1.2)


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
    file's), whether it continued an earlier attempt's bytes, and whether it is ``kept`` in another library's cache
    (never moved or deleted) rather than a temporary file of ours."""

    path: Path
    sha256: str
    size: int | None
    resumed: bool = False
    kept: bool = False


# --------------------------------------------------------------------------------------------- requests

def http_session(policy: RetryPolicy) -> requests.Session:
    """A session that retries as ``policy`` says (see the module docstring) and names this package."""
    retry = Retry(total=policy.retries, other=0, backoff_factor=policy.delay, backoff_max=policy.max_delay,
                  backoff_jitter=policy.delay / 5, status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET"}),
                  raise_on_status=False, respect_retry_after_header=True)
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


_FAILURES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (  # first match in the whole chain wins
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
    """One line saying why a request failed (DNS, refused, reset, timeout ...), read from the exception types in
    ``exc`` and everything it wraps."""
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
    detail = next((e.strerror for e in chain if isinstance(e, OSError) and e.strerror), type(exc).__name__)
    return f"connection error ({detail})"


def _gave_up(attempts: int) -> str:
    return f" (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"


def get(session: requests.Session, url: str, policy: RetryPolicy,
        headers: dict[str, str] | None = None) -> requests.Response:
    """GET ``url`` (streamed) through the retrying ``session``; a failure that the retries did not cure raises
    :class:`TransferError` saying why and after how many attempts. Other HTTP errors are the caller's."""
    try:
        response = session.get(url, headers=headers, stream=True, timeout=(policy.timeout, policy.timeout))
    except requests.exceptions.RequestException as exc:
        retried = (isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))
                   and not isinstance(exc, requests.exceptions.SSLError))
        reason = describe_request_error(exc, url, policy.timeout)
        raise TransferError(reason + (_gave_up(policy.retries + 1) if retried else "")) from None
    if response.status_code in RETRY_STATUS:
        history = response.raw.retries.history if getattr(response.raw, "retries", None) else ()
        response.close()
        reason = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
        raise TransferError(reason + _gave_up(1 + sum(1 for h in history if h.redirect_location is None)))
    return response


# ------------------------------------------------------------------------------------------ partial file

class _Partial:
    """This attempt's partial file (started from an abandoned attempt's bytes when there are any), its running digest,
    and the note saying where its bytes came from."""

    def __init__(self, target: Path, url: str, *, resume: bool) -> None:
        self.url, self.total, self.validator = url, None, None
        self.path, self.handle = cache.new_partial(target)
        self.hasher = hashlib.sha256()
        for candidate in cache.partials(target) if resume else ():
            note = _read_note(candidate)
            if note.get("url") != url or cache.in_use(candidate):
                continue
            claimed = cache.claim(target, candidate)
            if claimed is not None:  # ours now; its writer, if alive, writes on into a file that nobody reads
                self.hasher = hash_file(claimed, into=self.handle)
                self.total, self.validator = note.get("total"), note.get("validator")
                cache.remove([claimed, cache.note_path(candidate)])
                break
        self.size = self.handle.tell()
        self.resumed = self.size > 0
        self.note(self.total, self.validator)

    def note(self, total: int | None, validator: str | None) -> None:
        """Note the file's size and validator (for ``If-Range``) beside it."""
        self.total, self.validator = total, validator
        with atomic_write(cache.note_path(self.path)) as temporary:
            temporary.write_text(json.dumps({"url": self.url, "validator": validator, "total": total}))

    def reset(self) -> None:
        """Start again from byte 0, in the same file."""
        self.handle.seek(0)
        self.handle.truncate()
        self.hasher, self.size, self.total, self.validator = hashlib.sha256(), 0, None, None

    def write(self, chunk: bytes) -> None:
        try:
            self.handle.write(chunk)
        except OSError as exc:
            raise TransferError(f"cannot write {self.path} ({exc.strerror or exc})") from None
        self.hasher.update(chunk)
        self.size += len(chunk)

    def finish(self, *, complete: bool) -> Received:
        """Close the file: a complete one is handed over, an incomplete one let go for the next attempt (or removed
        when it holds nothing)."""
        self.handle.close()
        if complete or self.size == 0:
            cache.remove([cache.note_path(self.path)] + ([] if complete else [self.path]))
        else:
            cache.let_go(self.path)
        return Received(self.path, self.hasher.hexdigest(), self.size, self.resumed)


def _read_note(partial: Path) -> dict[str, Any]:
    try:
        note = json.loads(cache.note_path(partial).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def _human(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:.1f} MiB"


def _attempt(session: requests.Session, partial: _Partial, expected_size: int | None, size_from: str,
             policy: RetryPolicy, bar: Any) -> None:
    """One request: continue the partial file from where it ends to the end of the answer."""
    if partial.total is not None and partial.size >= partial.total:
        if partial.size == partial.total:
            return  # complete already: an earlier attempt stopped before it was verified
        partial.reset()
    headers = {"Accept-Encoding": "identity"}
    if partial.size:
        headers["Range"] = f"bytes={partial.size}-"
        headers.update({"If-Range": partial.validator} if partial.validator else {})
    with get(session, partial.url, policy, headers) as response:
        status, length = response.status_code, response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if status == 206:
            first, _, whole = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
            if first.split("-")[0] != str(partial.size):
                partial.reset()
                raise _BodyBroken(f"server answered a range request with Content-Range "
                                  f"{response.headers.get('Content-Range')!r}; starting again from byte 0")
            total = int(whole) if whole.isdigit() else None
        elif status == 200 and partial.size:  # the server ignored the range, or the file changed (If-Range)
            partial.reset()
            if not bar.disable:
                bar.write(f"{bar.desc}: the server sent the whole file again; starting from 0", file=sys.stderr)
        elif status == 416:  # our partial is not a prefix of the server's file
            partial.reset()
            raise _BodyBroken("HTTP 416 Range Not Satisfiable for the partial file; starting again from byte 0")
        elif status != 200:
            raise TransferError(f"HTTP {status} {response.reason or ''}".rstrip())
        if expected_size is not None and total is not None and total != expected_size:
            raise TransferError(f"the server's file is {total} bytes, {size_from} says {expected_size}")
        etag = response.headers.get("ETag")
        partial.note(total, etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified"))
        bar.total, bar.n = total, partial.size
        bar.refresh()
        try:
            for chunk in response.iter_content(NETWORK_CHUNK):
                partial.write(chunk)
                bar.update(len(chunk))
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                OSError) as exc:
            detail = describe_request_error(exc, partial.url, policy.timeout)
            raise _BodyBroken(f"transfer interrupted after {partial.size} of {total or '?'} bytes ({detail})") from None
    if total is not None and partial.size != total:
        if partial.size < total:
            raise _BodyBroken(f"the body ended after {partial.size} of {total} bytes")
        size = partial.size
        partial.reset()
        raise TransferError(f"received {size} bytes, more than the {total} the server announced")


def fetch_url(url: str, target: Path, *, policy: RetryPolicy, progress: bool, label: str,
              expected_size: int | None = None, size_from: str = "the catalogue", resume: bool = True) -> Received:
    """Download ``url`` into a partial file of this attempt's own (continuing an abandoned attempt's bytes when
    ``resume`` and it can) and return it complete, with the digest of its bytes.

    Raises :class:`TransferError` with a one-line reason when the source cannot supply the file; the partial file is
    then let go, so that the next attempt continues it.
    """
    try:
        partial = _Partial(target, url, resume=resume)
    except OSError as exc:
        raise TransferError(f"cannot write in {target.parent} ({exc.strerror or exc})") from None
    complete, failures, attempts = False, 0, 0
    bar = progress_bar(partial.total, desc=label, unit="B", enabled=progress, unit_scale=True, unit_divisor=1024,
                       initial=partial.size, miniters=1)
    if partial.resumed and progress:
        bar.write(f"{label}: continuing an interrupted download at {_human(partial.size)} of {_human(partial.total)}",
                  file=sys.stderr)
    try:
        with http_session(policy) as session:
            while not complete:
                before = partial.size
                attempts += 1
                try:
                    _attempt(session, partial, expected_size, size_from, policy, bar)
                    complete = True
                except _BodyBroken as exc:
                    failures = 1 if partial.size > before else failures + 1  # progress resets the count
                    if failures > policy.retries:
                        raise TransferError(exc.reason + _gave_up(attempts)) from None
                    if progress:
                        bar.write(f"{label}: {exc.reason}; resuming at {_human(partial.size)} of "
                                  f"{_human(partial.total)}", file=sys.stderr)
                    time.sleep(policy.backoff(failures))
    finally:
        bar.close()
        received = partial.finish(complete=complete)
    return received


def copy_file(source: Path, target: Path, *, progress: bool, label: str) -> Received:
    """Copy a local file (a mirror folder) into a new partial file of ``target``, hashing it on the way."""
    try:
        path, handle = cache.new_partial(target)
    except OSError as exc:
        raise TransferError(f"cannot write in {target.parent} ({exc.strerror or exc})") from None
    try:
        with handle, progress_bar(source.stat().st_size, desc=label, unit="B", enabled=progress,
                                  unit_scale=True, unit_divisor=1024) as bar:
            digest = hash_file(source, into=handle, on_chunk=bar.update)
    except BaseException:
        cache.remove([path])
        raise
    return Received(path, digest.hexdigest(), path.stat().st_size)
