"""The HTTP service: ``resnest-zoo serve``, :func:`serve` and :func:`create_app` (``pip install "resnest-zoo[serve]"``).

* :mod:`.settings`: the server's limits and their defaults (light: the command line reads them);
* :mod:`.models`: naming, loading and describing the models served;
* :mod:`.batching`: the bounded queue and the dynamic batcher of each model;
* :mod:`.uploads`, :mod:`.answers`: request bodies in, PNG/JSON answers out;
* :mod:`.problems`: the JSON error answers; :mod:`.middleware`: access log and API key; :mod:`.metrics`;
* :mod:`.app`: the ASGI app (FastAPI); :mod:`.server`: running it with uvicorn; ``page/``: the page at ``/``.

Named ``serving`` (not ``serve``) so that ``resnest_zoo.serve`` stays the function. Importing this package imports
neither torch nor FastAPI; :func:`serve` and :func:`create_app` do, on first use, or say which extra to install.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["serve", "create_app"]

_EXPORTS = {"serve": "server", "create_app": "app"}
_NEEDS = ("fastapi", "uvicorn", "prometheus_client", "python_multipart")


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..deploy.optional import require

    for dependency in _NEEDS:  # a missing one is an OptionalDependencyError naming the extra, not an ImportError
        require(dependency, "serving models over HTTP")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .app import create_app
    from .server import serve
