"""resnest_zoo: the ResNeSt-101 semantic segmentation checkpoints of sssegmentation, one line away.

>>> import resnest_zoo
>>> model = resnest_zoo.load("deeplabv3plus", "cityscapes")   # doctest: +SKIP
>>> model.predict("street.jpg").save("street_mask.png")       # doctest: +SKIP

The public names are those imported in the ``TYPE_CHECKING`` block below, written once: type checkers and IDEs read
them there, and :data:`__all__` and the imports on first use are made from that same block when the package is
imported. So ``import resnest_zoo`` (and the ``resnest-zoo`` command's ``--help``, ``list`` and ``verify``) does not
pay for importing torch until a model is needed.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # the public surface (see the module docstring)
    from .api import build, download, from_pretrained, list_models, load, load_model
    from .catalogue import CheckpointEntry, get_entry
    from .deploy.onnx import export_onnx
    from .deploy.int8 import export_openvino_int8
    from .deploy.openvino import export_openvino
    from .deploy.runtime import RuntimeModel
    from .errors import (
        AccuracyBoundError,
        CalibrationError,
        CatalogueError,
        CheckpointFormatError,
        ClassIdError,
        CheckpointMismatchError,
        CheckpointNotAvailableError,
        ConfigFormatError,
        ConfigurationError,
        ConfigVersionError,
        DatasetError,
        DeviceNotAvailableError,
        FolderReadError,
        ForeignConfigError,
        HubConnectionError,
        ImageReadError,
        IntegrityError,
        InvalidClassesError,
        OptionalDependencyError,
        OutputConflictError,
        OutputWriteError,
        PretrainedNotFoundError,
        ResNeStZooError,
        RuntimeFileError,
        RuntimeModelMismatchError,
        UnknownModelError,
        UnsafeCheckpointError,
        UnsupportedOpsetError,
    )
    from .evaluation.result import EvaluationResult
    from .evaluation.runner import evaluate
    from .inference.batch import BatchSummary, predict_to_folder
    from .inference.prediction import Prediction
    from .models.optimize import optimize_for_inference
    from .models.segmentor import FCN, DeepLabV3, DeepLabV3Plus, PSPNet, Segmentor, TrainingOutput
    from .publish import export, export_hub_folder
    from .serving import create_app, serve
    from .weights.cache import cached_files, clear_cache
    from .weights.checkpoint import read_state_dict
    from .weights.integrity import verify


def _public_names() -> dict[str, str]:
    """Public name -> the module that defines it, read from this file's ``TYPE_CHECKING`` block."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.asname or alias.name: str(node.module) for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}


_EXPORTS = _public_names()
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'resnest_zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
