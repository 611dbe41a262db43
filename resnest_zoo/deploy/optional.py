"""The optional dependencies (onnx, ONNX Runtime, OpenVINO, NNCF, and the HTTP server's FastAPI stack): which extra
provides each, imported only when used.

``import resnest_zoo`` and the PyTorch path never import them; asking for one that is missing raises
:class:`~resnest_zoo.errors.OptionalDependencyError` naming the ``pip install`` that provides it (for a published
package or a clone, as :mod:`resnest_zoo.installation` says).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import OptionalDependencyError
from ..installation import install_command

__all__ = ["EXTRAS", "require"]

# importable module -> the resnest-zoo extra (pyproject.toml [project.optional-dependencies]) that installs it
EXTRAS: dict[str, str] = {"onnx": "onnx", "onnxruntime": "onnx", "openvino": "openvino", "nncf": "int8",
                          "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve",
                          "python_multipart": "serve"}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRAS`), or say which extra to install for ``purpose``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{purpose} needs the {module!r} package, which is not installed ({exc}); install it with "
            f"{install_command(EXTRAS[module])}") from None
