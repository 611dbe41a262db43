"""Moving bytes into a partial file of this attempt's own: streamed HTTP(S) with resume, retries and a progress
bar, or a local copy.

:func:`fetch_url` and :func:`copy_file` leave the complete file under its temporary name (see
:mod:`resnest_zoo.weights.cache`) and return the digest of the bytes written into it; checking that digest and
renaming the very same file into place is :mod:`resnest_zoo.weights.obtain`'s job.

* Ownership: each attempt writes a new file with a random name, and only that one. An earlier attempt's partial
  download of the same URL is continued only after taking it by an atomic rename (:func:`cache.claim`), and
  only when no live process owns it; if its writer did not let it go (it died, or only looks dead), its bytes
  are copied into a new file, so that a late write of that writer can never reach ours.
* Resume: ``Range: bytes=N-`` with ``If-Range`` (the ETag or Last-Modified date the partial came with), so a
  file changed upstream restarts instead of being spliced; a partial from another URL is not used.
* Retries: requests' ``HTTPAdapter`` with urllib3's ``Retry`` retries connection errors, timeouts and HTTP 5xx,
  408 and 429 before an answer's body (``RESNEST_ZOO_RETRIES`` times, backoff factor ``RESNEST_ZOO_RETRY_DELAY``,
  honouring ``Retry-After``). A body that breaks off is continued by a new request with ``Range``, which
  ``Retry`` cannot do (it re-sends the same request: tests/test_weights_transfer.py shows it), so that part
  keeps a loop of its own; an attempt that received bytes resets its count. 4xx errors and failed DNS lookups
  are not retried: they do not get better by waiting.
* Completeness: the byte count is checked against Content-Length (or Content-Range's total).
"""
from __future__ import annotations

import hashlib
import http.client
import json
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
from tqdm.auto import tqdm
from urllib3.util.retry import Retry

from .. import environment, options
from . import cache
from .integrity import hash_file

__all__ = [
    "RetryPolicy",
    "TransferError",
    "Received",
    "http_session",
    "get",
    "describe_request_error",
    "fetch_url",
    "copy_file",
]

USER_AGENT = "resnest_zoo (+https://github.com/SegmentationBLWX/sssegmentation checkpoints)"
RETRY_STATUS = frozenset({408, 429, *range(500, 600)})
NETWORK_CHUNK = 64 * 1024  # small reads: bytes already received are kept when a connection breaks


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a download tries: attempts, backoff and the network timeout.

    ``retries`` further attempts follow a failure, waiting ``delay`` times 0, 2, 4, 8 ... seconds (urllib3's
    schedule, at most ``max_delay``). ``timeout`` is the seconds allowed to connect and, while reading,
    between two packets: a slow server that keeps sending is never cut off.
    """

    retries: int = options.RETRIES
    delay: float = options.RETRY_DELAY
    max_delay: float = options.MAX_RETRY_DELAY
    timeout: float = options.TIMEOUT

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The defaults, overridden by ``RESNEST_ZOO_RETRIES``, ``RESNEST_ZOO_RETRY_DELAY``, ``RESNEST_ZOO_TIMEOUT``."""
        return cls(
            retries=int(environment.number(environment.RETRIES, cls.retries, int)),
            delay=environment.number(environment.RETRY_DELAY, cls.delay),
            timeout=environment.number(environment.TIMEOUT, cls.timeout, minimum=0.001),
        )

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
    """A complete file under its temporary name: its path, the digest and size of the bytes written into it,
    and whether it continued an earlier attempt's bytes."""

    path: Path
    sha256: str
    size: int
    resumed: bool


# --------------------------------------------------------------------------------------------- requests

class _Retry(Retry):
    """urllib3's ``Retry``, except that a failed DNS lookup is final: waiting does not fix a wrong host name."""

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> Retry:
        if error is not None and _is_dns_failure(error):
            raise urllib3.exceptions.MaxRetryError(_pool, url or "", error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def http_session(policy: RetryPolicy) -> requests.Session:
    """A session that retries as ``policy`` says (see the module docstring) and names this package."""
    retry = _Retry(total=policy.retries, connect=policy.retries, read=policy.retries, status=policy.retries,
                   other=0, backoff_factor=policy.delay, backoff_max=policy.max_delay, backoff_jitter=policy.delay / 5,
                   status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET"}), raise_on_status=False,
                   respect_retry_after_header=True)
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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


def _is_dns_failure(exc: BaseException) -> bool:
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    return any(isinstance(e, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for e in chain) \
        or "Failed to resolve" in text or "Name or service not known" in text


def describe_request_error(exc: BaseException, url: str, timeout: float) -> str:
    """One line saying why a request failed (DNS, timeout, refused, reset ...)."""
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    if _is_dns_failure(exc):
        return f"DNS lookup failed for host {_host(url)!r} (no network, or a wrong host name)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
        return f"connection refused by {_host(url)}"
    if any(isinstance(e, ConnectionResetError) for e in chain) or "Connection reset" in text:
        return "connection reset by the server"
    if any(isinstance(e, (requests.exceptions.Timeout, socket.timeout, TimeoutError, urllib3.exceptions.TimeoutError))
           for e in chain):
        return f"timed out (no answer within {timeout:g} s)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "connection closed before the end of the body"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS/SSL error talking to {_host(url)}: {str(exc).splitlines()[0][:200]}"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return f"invalid URL {url!r}: {exc}"
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return f"connection error ({type(exc).__name__}: {first})"


def _gave_up(attempts: int) -> str:
    return f" (gave up after {attempts} attempt{'s' if attempts > 1 else ''})" if attempts else ""


def get(session: requests.Session, url: str, policy: RetryPolicy,
        headers: dict[str, str] | None = None) -> requests.Response:
    """GET ``url`` (streamed) through the retrying ``session``; a failure that retries did not cure raises
    :class:`TransferError` saying why and after how many attempts. Other HTTP errors are the caller's."""
    try:
        response = session.get(url, headers=headers, stream=True, timeout=(policy.timeout, policy.timeout))
    except requests.exceptions.RequestException as exc:
        retried = isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)) \
            and not isinstance(exc, requests.exceptions.SSLError) and not _is_dns_failure(exc)
        reason = describe_request_error(exc, url, policy.timeout)
        raise TransferError(reason + (_gave_up(policy.retries + 1) if retried else "")) from None
    if response.status_code in RETRY_STATUS:
        retries = getattr(response.raw, "retries", None)
        tries = 1 + sum(1 for h in (retries.history if retries else ()) if h.redirect_location is None)
        response.close()
        raise TransferError(f"HTTP {response.status_code} {response.reason or ''}".rstrip() + _gave_up(tries))
    return response


# ------------------------------------------------------------------------------------------ partial file

class _Partial:
    """This attempt's partial file, its running digest, and the note saying where its bytes came from."""

    def __init__(self, target: Path, url: str) -> None:
        self.url = url
        self.total: int | None = None
        self.validator: str | None = None
        claimed = self._claim(target)
        if claimed is not None and cache.released(claimed):  # let go by its writer: continue it in place
            self.path = claimed
            self.hasher = hash_file(claimed)
            self.handle = open(claimed, "ab")  # noqa: SIM115 -- closed by finish()
        elif claimed is not None:  # its writer may still hold it open: copy, never share a file with it
            self.path, self.handle = cache.new_partial(target)
            self.hasher = hash_file(claimed, into=self.handle)
            cache.remove([claimed])
        else:
            self.path, self.handle = cache.new_partial(target)
            self.hasher = hashlib.sha256()
        self.size = self.handle.tell()
        self.resumed = self.size > 0
        self._write_note()

    def _claim(self, target: Path) -> Path | None:
        """Take over the largest partial download of this URL that no live process owns, or None."""
        for candidate in cache.partials(target):
            note = _read_note(cache.note_path(candidate))
            if note is None or note.get("url") != self.url or cache.in_use(candidate):
                continue
            claimed = cache.claim(target, candidate)
            if claimed is None:
                continue  # another process was quicker
            cache.remove([cache.note_path(candidate)])
            self.total = note.get("total")
            etag = note.get("etag")  # earlier versions noted the ETag and the date apart
            self.validator = note.get("validator") or (etag if etag and not etag.startswith("W/") else None) \
                or note.get("last_modified")
            return claimed
        return None

    def _write_note(self) -> None:
        document = {"url": self.url, "validator": self.validator, "total": self.total}
        cache.write_text(cache.note_path(self.path), json.dumps(document))

    def note(self, response: requests.Response, total: int | None) -> None:
        """Note the answer's size and validator (a strong ETag, else Last-Modified), for ``If-Range`` later."""
        etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        self.total = total
        self.validator = etag if etag and not etag.startswith("W/") else modified
        self._write_note()

    def reset(self) -> None:
        """Start again from byte 0, in the same file."""
        self.handle.seek(0)
        self.handle.truncate()
        self.hasher = hashlib.sha256()
        self.size, self.total, self.validator = 0, None, None

    def append(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.hasher.update(chunk)
        self.size += len(chunk)

    def finish(self, *, complete: bool) -> Received:
        """Close the file; a complete one is handed over (its note is no longer needed), an incomplete one let
        go for a later attempt to continue (or removed, when it holds nothing)."""
        self.handle.close()
        if complete or self.size == 0:
            cache.remove([cache.note_path(self.path)] + ([] if complete else [self.path]))
        elif self.path.exists():  # (not when another process took it, judging it abandoned)
            cache.release(self.path)
        return Received(self.path, self.hasher.hexdigest(), self.size, self.resumed)


def _read_note(path: Path) -> dict[str, Any] | None:
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, total or None) from ``bytes a-b/total``."""
    if not value or not value.startswith("bytes ") or "-" not in value:
        return None
    span, _, total = value[6:].partition("/")
    try:
        return int(span.split("-")[0]), (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None


def _human(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:.1f} MiB"


_BODY_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                ConnectionError, socket.timeout, TimeoutError)


def _attempt(session: requests.Session, url: str, partial: _Partial, expected_size: int | None, size_from: str,
             policy: RetryPolicy, bar: tqdm) -> None:
    """One request: continue the partial file from where it ends, to the end of the answer."""
    offset = partial.size
    if offset and partial.total is not None and offset == partial.total:
        return  # complete already: an earlier attempt stopped before verifying it
    if partial.total is not None and offset > partial.total:
        partial.reset()
        offset = 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if partial.validator:
            headers["If-Range"] = partial.validator
    with get(session, url, policy, headers) as response:
        status = response.status_code
        if status == 416:  # our partial is not a prefix of the server's file
            partial.reset()
            raise _BodyBroken("HTTP 416 Range Not Satisfiable for the partial file; starting again from byte 0")
        if status >= 400:
            raise TransferError(f"HTTP {status} {response.reason or ''}".rstrip())
        if status == 206:
            span = _content_range(response.headers.get("Content-Range"))
            if span is None or span[0] != offset:
                partial.reset()
                raise _BodyBroken(f"server answered a range request with Content-Range "
                                  f"{response.headers.get('Content-Range')!r}, expected bytes {offset}-; starting again")
            total = span[1]
        elif status == 200:
            if offset:  # the server ignored the range, or the file changed (If-Range): start over
                partial.reset()
                if not bar.disable:
                    tqdm.write(f"{bar.desc}: the server sent the whole file again; starting from 0", file=sys.stderr)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise TransferError(f"unexpected HTTP {status} {response.reason or ''}".rstrip())
        if expected_size is not None and total is not None and total != expected_size:
            raise TransferError(f"the server's file is {total} bytes, {size_from} says {expected_size}")
        partial.note(response, total)
        bar.total = total
        if bar.n != partial.size:
            bar.n = partial.size
            bar.refresh()
        chunks = response.iter_content(NETWORK_CHUNK)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except _BODY_ERRORS as exc:
                detail = describe_request_error(exc, url, policy.timeout)
                raise _BodyBroken(f"transfer interrupted after {partial.size} of {total or '?'} bytes ({detail})") from None
            try:
                partial.append(chunk)
            except OSError as exc:
                raise TransferError(f"cannot write {partial.path} ({exc.strerror or exc})") from None
            bar.update(len(chunk))
    if total is not None and partial.size < total:
        raise _BodyBroken(f"the body ended after {partial.size} of {total} bytes")
    if total is not None and partial.size > total:
        size = partial.size
        partial.reset()
        raise TransferError(f"received {size} bytes, more than the {total} the server announced")


def _bar(label: str, progress: bool, total: int | None = None, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not progress, dynamic_ncols=True, miniters=1)


def fetch_url(
    url: str,
    target: Path,
    *,
    policy: RetryPolicy,
    progress: bool,
    label: str,
    expected_size: int | None = None,
    size_from: str = "the catalogue",
) -> Received:
    """Download ``url`` into a partial file of this attempt's own (continuing an abandoned attempt's bytes
    when it can) and return it complete, with the digest of its bytes.

    Raises :class:`TransferError` with a one-line reason when the source cannot supply the file; the partial
    file is then let go, so that a later attempt continues it.
    """
    try:
        partial = _Partial(target, url)
    except OSError as exc:
        raise TransferError(f"cannot write in {target.parent} ({exc.strerror or exc})") from None
    complete = False
    bar = _bar(label, progress, partial.total, partial.size)
    if partial.resumed and progress:
        tqdm.write(f"{label}: continuing an interrupted download at {_human(partial.size)} of {_human(partial.total)}",
                   file=sys.stderr)
    failures = attempts = 0
    try:
        with http_session(policy) as session, cache.Heartbeat(partial.handle.fileno(), partial.path):
            while not complete:
                before = partial.size
                attempts += 1
                try:
                    _attempt(session, url, partial, expected_size, size_from, policy, bar)
                    complete = True
                except _BodyBroken as exc:
                    failures = 1 if partial.size > before else failures + 1  # progress resets the count
                    if failures > policy.retries:
                        raise TransferError(exc.reason + _gave_up(attempts)) from None
                    if progress:
                        tqdm.write(f"{label}: {exc.reason}; resuming at {_human(partial.size)} of "
                                   f"{_human(partial.total)}", file=sys.stderr)
                    time.sleep(policy.backoff(failures))
    finally:  # after the heartbeat stopped: it must never touch a closed file's descriptor
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
        with handle, _bar(label, progress, source.stat().st_size) as bar:
            digest = hash_file(source, into=handle, on_chunk=bar.update)
    except BaseException:
        cache.remove([path])
        raise
    return Received(path, digest.hexdigest(), path.stat().st_size, resumed=False)
