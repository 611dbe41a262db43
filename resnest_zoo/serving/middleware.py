"""The two layers around every request (plain ASGI, so a disconnect still reaches the endpoint):

* :class:`AccessLog`: one line per request -- client, method, path, status, latency -- access-log style;
* :class:`RequireKey`: with an API key, ``Authorization: Bearer KEY`` on every endpoint but ``/healthz`` and
  ``/readyz`` (or HTTP Basic with the key as password, which is what a browser sends for the page after asking
  its user once), compared in constant time.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from typing import Any

from .problems import Problem, problem_response

__all__ = ["AccessLog", "RequireKey", "OPEN_PATHS", "ACCESS_LOGGER"]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""What probes reach without a key (they say nothing about the models)."""

ACCESS_LOGGER = "resnest_zoo.serving.access"


class AccessLog:
    """Logs ``CLIENT "METHOD PATH" STATUS LATENCY`` once each request is answered (or abandoned)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status: list[int] = []

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            where = f"{client[0]}:{client[1]}" if client else "-"
            query = scope.get("query_string", b"").decode("latin-1")
            path = scope.get("path", "") + (f"?{query}" if query else "")
            code = status[0] if status else 500
            self.logger.info('%s "%s %s" %d %.1f ms', where, scope.get("method", "-"), path, code,
                             (time.perf_counter() - began) * 1000)


class RequireKey:
    """Answers ``401`` (JSON, with ``WWW-Authenticate`` challenges for both schemes) to a request without the key."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self._digest = _digest(key)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        if header is not None and self._accepts(header):
            await self.app(scope, receive, send)
            return
        detail = ("this server requires an API key: send the header Authorization: Bearer KEY" if header is None
                  else "the Authorization header does not hold this server's API key (expected Bearer KEY)")
        response = problem_response(Problem("unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="resnest-zoo"'}))
        # a second challenge, on its own line: browsers then ask their user for the key (as the password)
        response.raw_headers.append((b"www-authenticate", b'Basic realm="resnest-zoo", charset="UTF-8"'))
        await response(scope, receive, send)

    def _accepts(self, header: bytes) -> bool:
        scheme, _, value = header.decode("latin-1").strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            offered = value
        elif scheme.lower() == "basic":  # a browser: any user name, the key as password
            try:
                offered = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        else:
            return False
        return hmac.compare_digest(_digest(offered), self._digest)  # equal-length digests: constant time


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None
