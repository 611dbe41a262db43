"""How the server batches, queues, limits and guards requests: :class:`ServeSettings`, whose field defaults are the
defaults of :func:`resnest_zoo.serve`, :func:`resnest_zoo.create_app` and ``resnest-zoo serve`` alike.

This module imports nothing heavy (no torch, no FastAPI), so the command line reads the defaults for its ``--help``
without paying for the server.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from .. import environment
from ..errors import ConfigurationError

__all__ = ["ServeSettings", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_GRACE", "default"]

DEFAULT_HOST = "127.0.0.1"
"""Only this machine can connect unless a host says otherwise (``0.0.0.0``: every interface)."""
DEFAULT_PORT = 8000
DEFAULT_GRACE = 30.0
"""Seconds a stopping server (SIGTERM, Ctrl-C) gives the requests in flight before it cancels them."""


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits (checked when made; :class:`~resnest_zoo.ConfigurationError` names a bad one).

    Attributes:
        max_batch_size: images of one model and one network input size that share a forward pass.
        max_wait_ms: how long the oldest waiting image waits for companions before its batch runs anyway.
        max_queue: requests per model admitted and not yet in a forward pass (reading, decoding, waiting); one
            more is answered ``503`` with ``Retry-After`` at once, so memory and latency stay bounded.
        timeout: seconds a request may wait from its arrival to its forward pass; past that it gets ``504``
            (``408`` if its upload is still arriving).
        max_upload_mb: largest request body in MiB; a larger one gets ``413`` before it is read.
        api_key: when set, every endpoint but ``/healthz`` and ``/readyz`` requires ``Authorization: Bearer KEY``
            (or HTTP Basic with the key as password, for browsers); default ``$RESNEST_ZOO_API_KEY``.
        cors_origins: origins whose pages may call the API from a browser (CORS); none by default.
        alpha: the default opacity of the mask in ``format=overlay`` answers.
    """

    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    timeout: float = 30.0
    max_upload_mb: float = 25.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    alpha: float = 0.5

    def __post_init__(self) -> None:
        _whole("max_batch_size", self.max_batch_size, 1)
        _whole("max_queue", self.max_queue, 1)
        _number("max_wait_ms", self.max_wait_ms, 0)
        _number("timeout", self.timeout, 0, strictly=True)
        _number("max_upload_mb", self.max_upload_mb, 0, strictly=True)
        _number("alpha", self.alpha, 0)
        if self.alpha > 1:
            raise ConfigurationError(f"alpha must be between 0 and 1 (the opacity of the mask), got {self.alpha!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigurationError("api_key is empty: give a non-empty key, or None for a server without one")
        if isinstance(self.cors_origins, str) or not all(isinstance(o, str) and o for o in self.cors_origins):
            raise ConfigurationError(f"cors_origins must be a list of origins such as 'https://app.example.com', "
                                     f"got {self.cors_origins!r}")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    @classmethod
    def make(cls, **values: Any) -> ServeSettings:
        """Settings from keyword arguments (unknown names refused), ``api_key`` from the environment when not given."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown server setting(s) {', '.join(unknown)}; "
                            f"the settings are {', '.join(sorted(known))}")
        if values.get("api_key") is None:
            values["api_key"] = environment.text(environment.API_KEY)
        return cls(**values)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def default(name: str) -> Any:
    """The default of the setting ``name`` (for the command's ``--help``)."""
    return next(field.default for field in fields(ServeSettings) if field.name == name)


def _whole(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number of at least {minimum}, got {value!r}")


def _number(name: str, value: Any, minimum: float, *, strictly: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value > minimum if strictly else value >= minimum)
    if not ok:
        relation = "more than" if strictly else "at least"
        raise ConfigurationError(f"{name} must be a number {relation} {minimum:g}, got {value!r}")
