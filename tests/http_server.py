"""A real HTTP server on 127.0.0.1 for download tests: threaded, Range/If-Range support, injectable faults.

    with FileServer() as server:
        server.add("ckpt.pth", path_or_bytes)
        server.fault("ckpt.pth", Fault.status(500), Fault.drop(after=1000))   # consumed one per GET, in order
        url = server.url("ckpt.pth")
        ...
        server.bytes_served("ckpt.pth"), server.log    # what was transferred

Faults: ``status(code, headers)`` answers with that status (and headers); ``drop(after)`` sends the headers
and ``after`` body bytes, then resets the connection; ``truncate(after)`` sends ``after`` body bytes and closes cleanly;
``corrupt()`` sends the full length with wrong bytes; ``stall(seconds)`` waits before answering;
``ignore_range()`` answers a range request with the whole file (200). ``server.delay(path, seconds)``
sleeps between 64 KiB chunks of every answer (a slow link). The log notes each request's ``Authorization``.
"""
from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fault:
    kind: str
    value: float = 0
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def status(cls, code: int, headers: dict[str, str] | None = None) -> Fault:
        return cls("status", code, tuple((headers or {}).items()))

    @classmethod
    def drop(cls, after: int) -> Fault:
        return cls("drop", after)

    @classmethod
    def truncate(cls, after: int) -> Fault:
        return cls("truncate", after)

    @classmethod
    def corrupt(cls) -> Fault:
        return cls("corrupt")

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        return cls("stall", seconds)

    @classmethod
    def ignore_range(cls) -> Fault:
        return cls("ignore_range")


@dataclass
class Resource:
    source: bytes | Path
    size: int
    etag: str
    headers: dict[str, str] = field(default_factory=dict)

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end)."""
        if isinstance(self.source, bytes):
            return self.source[start:end]
        with open(self.source, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int
    authorization: str | None = None


class _Abort(Exception):
    """Raised by the handler to drop the connection on purpose."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # silence the default stderr log
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, *, head: bool) -> None:
        owner = self.server.owner
        with owner._idle:
            owner._active += 1
        try:
            self._serve(owner, head=head)
        finally:
            with owner._idle:
                owner._active -= 1
                owner._idle.notify_all()

    def _serve(self, owner: FileServer, *, head: bool) -> None:
        path = self.path.split("?", 1)[0].lstrip("/")
        range_header = self.headers.get("Range")
        fault = owner._next_fault(path) if not head else None
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.value)
            fault = None
        resource = owner._resources.get(path)
        if resource is None:
            self._simple(404, b"not found", path, range_header)
            return
        if fault is not None and fault.kind == "status":
            self._simple(int(fault.value), b"injected failure", path, range_header, dict(fault.headers))
            return
        start, status = 0, 200
        if range_header and not (fault is not None and fault.kind == "ignore_range"):
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range == resource.etag:
                start = int(range_header.split("=", 1)[1].split("-", 1)[0])
                status = 206
        if start >= resource.size and status == 206:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{resource.size}")
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            owner._log(self._request(path, range_header, 416, 0))
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(resource.size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", resource.etag)
        self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        self.send_header("Connection", "close")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{resource.size - 1}/{resource.size}")
        for name, value in resource.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        if head:
            owner._log(self._request(path, range_header, status, 0))
            return
        limit = resource.size
        if fault is not None and fault.kind in ("drop", "truncate"):
            limit = min(resource.size, start + int(fault.value))
        sent = 0
        position = start
        try:
            while position < limit:
                chunk = resource.read(position, min(limit, position + CHUNK))
                if fault is not None and fault.kind == "corrupt":
                    chunk = bytes(b ^ 0xFF for b in chunk[:16]) + chunk[16:]
                self.wfile.write(chunk)
                sent += len(chunk)
                position += len(chunk)
                delay = owner._delays.get(path, 0.0)
                if delay:
                    self.wfile.flush()
                    time.sleep(delay)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a test cancelled it)
        finally:
            owner._log(self._request(path, range_header, status, sent))
        if fault is not None and fault.kind == "drop":
            # RST instead of FIN: the client sees "connection reset" in the middle of the body
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise _Abort()

    def _request(self, path: str, range_header: str | None, status: int, sent: int) -> Request:
        return Request(self.command, path, range_header, status, sent, self.headers.get("Authorization"))

    def _simple(self, status: int, body: bytes, path: str, range_header: str | None,
                headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.owner._log(self._request(path, range_header, status, 0))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FileServer

    def handle_error(self, request: object, client_address: object) -> None:  # injected drops are expected
        pass


class FileServer:
    """The test server; see the module docstring."""

    def __init__(self) -> None:
        self._resources: dict[str, Resource] = {}
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._active = 0
        self.log: list[Request] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def add(self, path: str, source: bytes | Path, *, headers: dict[str, str] | None = None) -> str:
        """Serve ``source`` (bytes, or a file read on demand) at ``/path``; returns its URL."""
        if isinstance(source, bytes):
            digest, size = hashlib.sha256(source).hexdigest(), len(source)
        else:
            source = Path(source)
            hasher = hashlib.sha256()
            with open(source, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(chunk)
            digest, size = hasher.hexdigest(), source.stat().st_size
        self._resources[path.lstrip("/")] = Resource(source, size, f'"{digest}"', dict(headers or {}))
        return self.url(path)

    def remove(self, path: str) -> None:
        self._resources.pop(path.lstrip("/"), None)

    def fault(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next GET requests of ``path``, one per request."""
        with self._lock:
            self._faults[path.lstrip("/")].extend(faults)

    def delay(self, path: str, seconds: float) -> None:
        """Sleep ``seconds`` after each 64 KiB chunk of ``path`` (0 turns it off)."""
        self._delays[path.lstrip("/")] = seconds

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    def _log(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    def requests(self, path: str | None = None, method: str = "GET") -> list[Request]:
        """The requests answered so far (after waiting up to 5 s for answers in progress to finish)."""
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=5)
        with self._lock:
            return [r for r in self.log if r.method == method and (path is None or r.path == path.lstrip("/"))]

    def bytes_served(self, path: str | None = None) -> int:
        return sum(r.body_bytes for r in self.requests(path))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
