"""Moving bytes into a partial file: streamed HTTP(S) with resume, retries and a progress bar, or a local copy.

:func:`fetch_url` leaves the complete file under its temporary name and returns its digest; checking the
digest and renaming the file into place is the caller's job (:mod:`resnest_zoo.sources`), so that no
partial or unverified file is ever found under the final name.

* Resume: a partial file is continued with ``Range: bytes=N-`` (and ``If-Range`` with the ETag or
  Last-Modified date the partial came with, so a file changed upstream restarts instead of being spliced).
  The URL the partial came from is noted beside it; a partial from another URL is started afresh.
* Retries: connection errors, timeouts, a body that stops short of its Content-Length, HTTP 5xx, 408 and 429
  are retried with exponential backoff (``RESNEST_ZOO_RETRIES`` attempts after the first, starting at
  ``RESNEST_ZOO_RETRY_DELAY`` seconds, doubling, with jitter). An attempt that received bytes resets the
  count, so a long download over a flaky link keeps going as long as it makes progress. 4xx errors and
  failed DNS lookups are not retried: they do not get better by waiting.
* Completeness: the byte count is checked against Content-Length (or Content-Range's total).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from tqdm.auto import tqdm

from .. import environment
from .integrity import CHUNK_SIZE

__all__ = [
    "RetryPolicy",
    "TransferError",
    "Received",
    "fetch_url",
    "copy_file",
    "describe_request_error",
]

USER_AGENT = "resnest_zoo (+https://github.com/SegmentationBLWX/sssegmentation checkpoints)"
_RETRY_STATUS = {408, 429}
NETWORK_CHUNK = 64 * 1024  # small reads: bytes already received are kept when a connection breaks


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a download tries: attempts, backoff and the network timeout.

    ``retries`` further attempts follow a failure that received nothing, after ``delay``, ``2*delay``, ...
    seconds (at most ``max_delay``). ``timeout`` is the seconds allowed to connect and, while reading,
    between two packets: a slow server that keeps sending is never cut off.
    """

    retries: int = 4
    delay: float = 1.0
    max_delay: float = 30.0
    timeout: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The defaults, overridden by ``RESNEST_ZOO_RETRIES``, ``RESNEST_ZOO_RETRY_DELAY``, ``RESNEST_ZOO_TIMEOUT``."""
        return cls(
            retries=int(environment.number(environment.RETRIES, cls.retries, int)),
            delay=environment.number(environment.RETRY_DELAY, cls.delay),
            timeout=environment.number(environment.TIMEOUT, cls.timeout, minimum=0.001),
        )

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (jittered by +-20%)."""
        return min(self.max_delay, self.delay * 2 ** max(0, failures - 1)) * random.uniform(0.8, 1.2)


class TransferError(Exception):
    """A source could not supply the file; ``reason`` is one line saying why (HTTP 404, DNS, timeout ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Retryable(TransferError):
    """A failure worth another attempt (connection, timeout, short body, 5xx)."""


@dataclass(frozen=True)
class Received:
    """A complete file under its temporary name: digest, size, and whether it continued an earlier partial."""

    sha256: str
    size: int
    resumed: bool


class _PartialFile:
    """The partial file, its running digest, and the note saying where its bytes came from."""

    def __init__(self, path: Path, meta: Path, url: str) -> None:
        self.path, self.meta, self.url = path, meta, url
        self.hasher = hashlib.sha256()
        self.hashed = 0
        self.total: int | None = None
        self.validator: str | None = None
        self.resumed = False
        note = self._read_note()
        if self.path.exists() and note is not None and note.get("url") == url:
            self.total = note.get("total")
            etag, modified = note.get("etag"), note.get("last_modified")
            self.validator = etag if etag and not etag.startswith("W/") else modified
            self.resumed = self.path.stat().st_size > 0
        else:
            self.reset()

    def _read_note(self) -> dict[str, Any] | None:
        try:
            note = json.loads(self.meta.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return note if isinstance(note, dict) else None

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def reset(self) -> None:
        """Start from byte 0 (the file is created again by the first bytes received)."""
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)
        self.hasher, self.hashed, self.total, self.validator = hashlib.sha256(), 0, None, None

    def catch_up(self) -> int:
        """Make the running digest cover the bytes on disk (after a resume); return the byte count."""
        size = self.size
        if self.hashed != size:
            self.hasher, self.hashed = hashlib.sha256(), 0
            with open(self.path, "rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                    self.hasher.update(chunk)
                    self.hashed += len(chunk)
        return self.hashed

    def note(self, response: requests.Response, total: int | None) -> None:
        etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        self.total = total
        self.validator = etag if etag and not etag.startswith("W/") else modified
        document = {"url": self.url, "etag": etag, "last_modified": modified, "total": total}
        temporary = self.meta.with_name(f"{self.meta.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temporary, self.meta)

    def append(self, handle: Any, chunk: bytes) -> None:
        handle.write(chunk)
        self.hasher.update(chunk)
        self.hashed += len(chunk)

    def received(self) -> Received:
        return Received(sha256=self.hasher.hexdigest(), size=self.hashed, resumed=self.resumed)


def _host(url: str) -> str:
    return urllib3.util.parse_url(url).host or url


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.append(current)
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                stack.append(linked)
    return seen


def describe_request_error(exc: BaseException, url: str, timeout: float) -> TransferError:
    """One-line reason for a failed request, as a retryable error or not (DNS failures are not retried)."""
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    name_resolution = getattr(urllib3.exceptions, "NameResolutionError", ())
    if any(isinstance(e, socket.gaierror) or (name_resolution and isinstance(e, name_resolution)) for e in chain) \
            or "Failed to resolve" in text or "Name or service not known" in text:
        return TransferError(f"DNS lookup failed for host {_host(url)!r} (no network, or a wrong host name)")
    if isinstance(exc, requests.exceptions.Timeout) or any(isinstance(e, (socket.timeout, TimeoutError)) for e in chain):
        return _Retryable(f"timed out (no answer within {timeout:g} s)")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
        return _Retryable(f"connection refused by {_host(url)}")
    if any(isinstance(e, ConnectionResetError) for e in chain) or "Connection reset" in text:
        return _Retryable("connection reset by the server")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return _Retryable("connection closed before the end of the body")
    if isinstance(exc, requests.exceptions.SSLError):
        return TransferError(f"TLS/SSL error talking to {_host(url)}: {str(exc).splitlines()[0][:200]}")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return TransferError(f"invalid URL {url!r}: {exc}")
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return _Retryable(f"connection error ({type(exc).__name__}: {first})")


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, total or None) from ``bytes a-b/total``."""
    if not value or not value.startswith("bytes ") or "-" not in value:
        return None
    span, _, total = value[6:].partition("/")
    try:
        return int(span.split("-")[0]), (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None


_BODY_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                ConnectionError, socket.timeout, TimeoutError)


def _attempt(session: requests.Session, url: str, partial: _PartialFile, expected_size: int | None,
             policy: RetryPolicy, bar: tqdm) -> Received:
    offset = partial.catch_up()
    if offset and partial.total is not None and offset == partial.total:
        return partial.received()  # complete already: an earlier process stopped before verifying it
    if partial.total is not None and offset > partial.total:
        partial.reset()
        offset = 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if partial.validator:
            headers["If-Range"] = partial.validator
    try:
        response = session.get(url, headers=headers, stream=True, timeout=(policy.timeout, policy.timeout))
    except requests.exceptions.RequestException as exc:
        raise describe_request_error(exc, url, policy.timeout) from None
    with response:
        status = response.status_code
        if status >= 500 or status in _RETRY_STATUS:
            raise _Retryable(f"HTTP {status} {response.reason or ''}".rstrip())
        if status == 416:  # our partial is not a prefix of the server's file
            partial.reset()
            raise _Retryable("HTTP 416 Range Not Satisfiable for the partial file; starting again")
        if status >= 400:
            raise TransferError(f"HTTP {status} {response.reason or ''}".rstrip())
        if status == 206:
            span = _content_range(response.headers.get("Content-Range"))
            if span is None or span[0] != offset:
                partial.reset()
                raise _Retryable(f"server answered a range request with Content-Range "
                                 f"{response.headers.get('Content-Range')!r}, expected bytes {offset}-; starting again")
            total = span[1]
        elif status == 200:
            if offset:  # the server ignored the range, or the file changed (If-Range): start over
                partial.reset()
                offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise TransferError(f"unexpected HTTP {status} {response.reason or ''}".rstrip())
        if expected_size is not None and total is not None and total != expected_size:
            raise TransferError(f"the server's file is {total} bytes, the catalogue says {expected_size}")
        partial.path.parent.mkdir(parents=True, exist_ok=True)
        partial.note(response, total)
        bar.reset(total=total)
        bar.update(offset)
        chunks = response.iter_content(NETWORK_CHUNK)
        with open(partial.path, "ab") as handle:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except _BODY_ERRORS as exc:
                    detail = describe_request_error(exc, url, policy.timeout).reason
                    raise _Retryable(f"transfer interrupted after {partial.hashed} of {total or '?'} bytes ({detail})") from None
                partial.append(handle, chunk)
                bar.update(len(chunk))
    if total is not None and partial.hashed < total:
        raise _Retryable(f"the body ended after {partial.hashed} of {total} bytes")
    if total is not None and partial.hashed > total:
        size = partial.hashed
        partial.reset()
        raise TransferError(f"received {size} bytes, more than the {total} the server announced")
    return partial.received()


def fetch_url(
    url: str,
    partial_path: Path,
    meta_path: Path,
    *,
    policy: RetryPolicy,
    progress: bool,
    label: str,
    expected_size: int | None = None,
) -> Received:
    """Download ``url`` into ``partial_path`` (resuming what is there), returning the complete file's digest.

    Raises :class:`TransferError` with a one-line reason when the source cannot supply the file. A partial
    file is kept after a retryable failure, so the next call resumes it.
    """
    partial = _PartialFile(partial_path, meta_path, url)
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    bar = tqdm(total=partial.total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress,
               dynamic_ncols=True, miniters=1)
    failures = attempts = 0
    try:
        while True:
            before = partial.size
            attempts += 1
            try:
                return _attempt(session, url, partial, expected_size, policy, bar)
            except _Retryable as exc:
                failures = 1 if partial.size > before else failures + 1  # progress resets the count
                if failures > policy.retries:
                    plural = "s" if attempts > 1 else ""
                    raise TransferError(f"{exc.reason} (gave up after {attempts} attempt{plural})") from None
                time.sleep(policy.backoff(failures))
    finally:
        bar.close()
        session.close()


def copy_file(source: Path, partial_path: Path, *, progress: bool, label: str) -> Received:
    """Copy a local file (a mirror folder) into ``partial_path``, hashing it on the way."""
    partial_path.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    size = 0
    total = source.stat().st_size
    with open(source, "rb") as src, open(partial_path, "wb") as dst, \
            tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress) as bar:
        for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
            dst.write(chunk)
            hasher.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return Received(sha256=hasher.hexdigest(), size=size, resumed=False)
