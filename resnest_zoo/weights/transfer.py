"""Moving bytes into a partial download of this attempt's own (HTTP(S) with resume and retries, or a local copy),
handed over with the digest of its bytes. Each attempt writes a new file, and only that one: an earlier attempt's
partial download of the same URL that no live process owns is taken by an atomic rename and its bytes *copied* (its
writer may be alive after all), then continued with ``Range`` and ``If-Range`` (a file changed upstream is sent whole).
urllib3's ``Retry``, as configured, re-sends a request that failed before its body; a body that breaks off is continued
with a Range request, which ``Retry`` cannot do, by a loop with the same count.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import socket
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
    seconds (at most ``max_delay``); ``timeout`` seconds to connect and between two packets."""

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
    """The answer's body stopped short or broke off: to be continued with a Range request."""


@dataclass(frozen=True)
class Received:
    """A complete file: its path, digest and size (None: not comparable), and if ``kept`` in another library's cache."""

    path: Path
    sha256: str
    size: int | None
    kept: bool = False


def http_session(policy: RetryPolicy) -> requests.Session:
    """A session that retries failed connections and answers (5xx, 408, 429) as ``policy`` says, and names us."""
    retry = Retry(total=policy.retries, backoff_factor=policy.delay, backoff_max=policy.max_delay,
                  backoff_jitter=policy.delay / 5, status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET"}),
                  raise_on_status=False, respect_retry_after_header=True)
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


_FAILURES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (  # the first that anything in the chain is
    ((socket.gaierror, urllib3.exceptions.NameResolutionError),
     "DNS lookup failed for host {host!r} (no network, or a wrong host name)"),
    ((ConnectionRefusedError,), "connection refused by {host}"),
    ((ConnectionResetError,), "connection reset by the server"),
    ((TimeoutError, requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError),  # (not NewConnectionError)
     "timed out (no answer within {timeout:g} s)"),
    ((http.client.IncompleteRead, urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError),
     "connection closed before the end of the body"),
    ((requests.exceptions.InvalidURL, requests.exceptions.MissingSchema), "invalid URL {url!r}"),
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
    """GET ``url`` (streamed) through the retrying ``session``; what the retries did not cure raises TransferError."""
    try:
        response = session.get(url, headers=headers, stream=True, timeout=(policy.timeout, policy.timeout))
    except requests.exceptions.RequestException as exc:
        retried = isinstance(exc, (requests.ConnectionError, requests.Timeout))
        raise TransferError(describe_request_error(exc, url, policy.timeout)
                            + (_gave_up(policy.retries + 1) if retried else "")) from None
    if response.status_code in RETRY_STATUS:
        history = response.raw.retries.history if getattr(response.raw, "retries", None) else ()
        response.close()
        raise TransferError(f"HTTP {response.status_code} {response.reason or ''}".rstrip()
                            + _gave_up(1 + sum(1 for h in history if h.redirect_location is None)))
    return response


class _Download:
    """One attempt's partial file, its digest and note (URL, validator, size), and the requests completing it."""

    def __init__(self, url: str, target: Path, policy: RetryPolicy, expected_size: int | None, size_from: str) -> None:
        self.url, self.name, self.policy = url, target.name, policy
        self.expected_size, self.size_from = expected_size, size_from
        self.path, self.handle = _new_partial(target)
        self.hasher, self.total, self.validator = hashlib.sha256(), None, None
        for candidate in cache.partials(target):  # an attempt of this URL that noted its validator, and is let go
            claimed = cache.partial_path(target)
            try:
                note = json.loads(cache.note_path(candidate).read_text(encoding="utf-8"))
                if note["url"] != url or not note["validator"] or cache.in_use(candidate):
                    continue
                os.rename(candidate, claimed)  # atomic: one process at most takes it
            except (FileNotFoundError, ValueError, TypeError, KeyError):
                continue
            self.hasher = hash_file(claimed, into=self.handle)  # a copy: its writer, if alive, writes on into a
            cache.remove([claimed, cache.note_path(candidate)])  # file that nobody reads
            self.note(note.get("total"), note["validator"])
            break
        self.size = self.handle.tell()

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

    def run(self, progress: bool) -> Received:
        """Requests until the file is complete, each continuing it where it ends; then the file, handed over."""
        complete, failures, attempts, name = False, 0, 0, self.name
        bar = progress_bar(self.total, desc=name, unit="B", enabled=progress, unit_scale=True, unit_divisor=1024,
                           initial=self.size, miniters=1)
        if self.size and progress:
            bar.write(f"{name}: continuing an interrupted download at {self._mib()}", file=sys.stderr)
        try:
            with http_session(self.policy) as session:
                while not complete:
                    before, attempts = self.size, attempts + 1
                    try:
                        self.attempt(session, bar)
                        complete = True
                    except _BodyBroken as exc:
                        failures = 1 if self.size > before else failures + 1  # progress resets the count
                        if failures > self.policy.retries:
                            raise TransferError(exc.reason + _gave_up(attempts)) from None
                        if progress:
                            bar.write(f"{name}: {exc.reason}; resuming at {self._mib()}", file=sys.stderr)
                        time.sleep(min(self.policy.max_delay, self.policy.delay * 2 ** (failures - 1) if failures > 1
                                       else 0) * random.uniform(0.8, 1.2))  # urllib3's schedule, jittered
        finally:
            bar.close()
            self.handle.close()
            if complete or not self.size:
                cache.remove([cache.note_path(self.path), *([] if complete else [self.path])])
            else:  # dated back: the next attempt continues it at once, not after STALE_SECONDS
                with contextlib.suppress(FileNotFoundError):  # (unless another process took it already)
                    os.utime(self.path, (time.time() - 2 * cache.STALE_SECONDS,) * 2)
        return Received(self.path, self.hasher.hexdigest(), self.size)

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
            elif status in (200, 416) and self.size:  # the range ignored, the file changed (If-Range), or shorter
                self.restart()
                if status == 416:
                    raise _BodyBroken("HTTP 416 Range Not Satisfiable for the partial file; starting again from byte 0")
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
        """Append ``chunk`` to the file and its digest."""
        try:
            self.handle.write(chunk)
        except OSError as exc:
            raise TransferError(f"cannot write {self.path} ({exc.strerror or exc})") from None
        self.hasher.update(chunk)
        self.size += len(chunk)

    def _mib(self) -> str:
        return f"{self.size / 2**20:.1f} MiB of " + ("?" if self.total is None else f"{self.total / 2**20:.1f} MiB")


def _new_partial(target: Path) -> tuple[Path, Any]:
    """A new partial download of ``target``: a file no other process knows, created and opened for writing."""
    path = cache.partial_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return path, open(path, "xb")  # noqa: SIM115 -- the caller closes it
    except OSError as exc:
        raise TransferError(f"cannot write in {target.parent} ({exc.strerror or exc})") from None


def fetch_url(url: str, target: Path, *, policy: RetryPolicy, progress: bool, expected_size: int | None = None,
              size_from: str = "the catalogue") -> Received:
    """Download ``url`` into a partial file of this attempt's own (continuing an abandoned attempt's bytes when one
    can be taken) and return it complete; or raise :class:`TransferError` saying why, the partial file let go."""
    try:
        download = _Download(url, target, policy, expected_size, size_from)
    except OSError as exc:  # (copying an abandoned attempt's bytes, writing the note)
        raise TransferError(f"cannot write in {target.parent} ({exc.strerror or exc})") from None
    return download.run(progress)


def copy_file(source: Path, target: Path, *, progress: bool) -> Received:
    """Copy a local file (a mirror folder) into a new partial file of ``target``, hashing it on the way."""
    path, handle = _new_partial(target)
    try:
        with handle, progress_bar(source.stat().st_size, desc=target.name, unit="B", enabled=progress, unit_scale=True,
                                  unit_divisor=1024) as bar:
            digest = hash_file(source, into=handle, on_chunk=bar.update)
    except BaseException:
        cache.remove([path])
        raise
    return Received(path, digest.hexdigest(), path.stat().st_size)
