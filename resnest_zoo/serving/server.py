"""Running the service: :func:`serve` starts uvicorn on the app of :func:`~.app.create_app` and stops it gracefully.

SIGTERM or Ctrl-C: the server stops accepting connections, answers the requests in flight (those queued too),
and returns within ``grace`` seconds; then the process exits 0 (uvicorn would re-raise the signal, which ends a
process with the signal's status, not 0 -- Kubernetes and systemd read that as a crash).
"""
from __future__ import annotations

import copy
import logging
import signal
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import uvicorn
from uvicorn.config import LOGGING_CONFIG

from ..errors import ConfigurationError
from .app import create_app
from .settings import DEFAULT_GRACE, DEFAULT_HOST, DEFAULT_PORT

__all__ = ["serve"]

logger = logging.getLogger("resnest_zoo.serving")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(
    models: Iterable[str] | Mapping[str, Any],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    grace: float = DEFAULT_GRACE,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    backend: str = "torch",
    cache_dir: str | None = None,
    log_level: str = "info",
    **settings: Any,
) -> None:
    """Serve ``models`` over HTTP on ``host:port`` until SIGTERM or Ctrl-C (then return, requests in flight answered).

    ``models``, ``device``, ``dtype``, ``backend``, ``cache_dir`` and ``settings`` are those of
    :func:`resnest_zoo.create_app`. ``host`` defaults to 127.0.0.1, so only this machine can connect; ``0.0.0.0``
    listens on every interface (then set an API key). ``port=0`` picks a free port (logged). ``grace``: seconds
    the requests in flight get when stopping, after which they are cancelled.

    Raises what the models' loading raised (:class:`~resnest_zoo.CheckpointNotAvailableError` ...), after the
    server has stopped, and :class:`~resnest_zoo.ConfigurationError` when ``host:port`` cannot be listened on.
    """
    if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0:
        raise ConfigurationError(f"grace must be a number of seconds >= 0, got {grace!r}")
    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(models, device=device, dtype=dtype, backend=backend, cache_dir=cache_dir,
                     on_load_failure=failed, **settings)
    listener = _listen(host, port)
    config = uvicorn.Config(app, log_config=_log_config(log_level), log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=grace, server_header=False, lifespan="on")
    server = uvicorn.Server(config)
    bound_host, bound_port = listener.getsockname()[:2]
    url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
    logger.info("listening on %s (the page: %s/, the API: %s/docs); loading %s", url, url, url,
                ", ".join(app.state.service.sources))
    with _graceful(server):
        server.run(sockets=[listener])
    listener.close()
    if failures:
        raise failures[0]


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one clear error (uvicorn would exit the process)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigurationError(f"port must be a whole number from 0 to 65535 (0: any free port), got {port!r}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                                 "(or stop what uses it), or another --host") from None
    listener.listen(2048)
    listener.setblocking(False)
    return listener


@contextmanager
def _graceful(server: uvicorn.Server) -> Iterator[None]:
    """SIGINT and SIGTERM ask ``server`` to stop, before uvicorn installs its own handlers and after it restores
    these (it then raises the signal again, which these absorb: the stop was graceful, the exit status stays 0)."""
    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True

    try:
        previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    except ValueError:  # not the main thread: uvicorn does not handle signals there either
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging (``INFO:     message`` on stderr), with the service's logger and access log on it."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["resnest_zoo.serving"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    # a malformed form is answered 400 and logged as such: the parser's own warning about it is noise
    config["loggers"]["python_multipart"] = {"handlers": ["default"], "level": "ERROR", "propagate": False}
    return config
