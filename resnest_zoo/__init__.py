"""resnest_zoo: the ResNeSt-101 semantic segmentation checkpoints of sssegmentation, one line away.

>>> import resnest_zoo
>>> model = resnest_zoo.load("deeplabv3plus", "cityscapes")   # doctest: +SKIP
>>> model.predict("street.jpg").save("street_mask.png")       # doctest: +SKIP

The names in ``__all__`` are imported on first use, so ``import resnest_zoo`` (and the ``resnest-zoo``
command's ``--help``, ``list`` and ``verify``) does not pay for importing torch until a model is needed.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "load": "api",
    "build": "api",
    "list_models": "api",
    "get_entry": "catalogue",
    "CheckpointEntry": "catalogue",
    "read_state_dict": "weights.checkpoint",
    "download": "weights.sources",
    "export": "deploy.safetensors",
    "verify": "weights.integrity",
    "cached_files": "weights.cache",
    "clear_cache": "weights.cache",
    "optimize_for_inference": "models.optimize",
    "Segmentor": "models.segmentor",
    "FCN": "models.segmentor",
    "PSPNet": "models.segmentor",
    "DeepLabV3": "models.segmentor",
    "DeepLabV3Plus": "models.segmentor",
    "Prediction": "inference.prediction",
    "evaluate": "evaluation.runner",
    "EvaluationResult": "evaluation.result",
    "predict_to_folder": "inference.batch",
    "BatchSummary": "inference.batch",
    "from_pretrained": "hub.pretrained",
    "TrainingOutput": "models.segmentor",
    "ResNeStZooError": "errors",
    "UnknownModelError": "errors",
    "CatalogueError": "errors",
    "CheckpointFormatError": "errors",
    "CheckpointMismatchError": "errors",
    "UnsafeCheckpointError": "errors",
    "CheckpointNotAvailableError": "errors",
    "IntegrityError": "errors",
    "ConfigurationError": "errors",
    "DatasetError": "errors",
    "ImageReadError": "errors",
    "OutputWriteError": "errors",
    "OutputConflictError": "errors",
    "InvalidClassesError": "errors",
    "PretrainedNotFoundError": "errors",
    "ConfigFormatError": "errors",
    "ForeignConfigError": "errors",
    "ConfigVersionError": "errors",
    "DeviceNotAvailableError": "errors",
    "export_onnx": "deploy.onnx",
    "export_openvino": "deploy.openvino",
    "RuntimeModel": "inference.backends",
    "OptionalDependencyError": "errors",
    "UnsupportedOpsetError": "errors",
    "RuntimeFileError": "errors",
    "RuntimeModelMismatchError": "errors",
    "serve": "serving",
    "create_app": "serving",
}

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


if TYPE_CHECKING:  # what static type checkers and IDEs see
    from .api import build, list_models, load
    from .weights.cache import cached_files, clear_cache
    from .catalogue import CheckpointEntry, get_entry
    from .deploy.safetensors import export
    from .weights.checkpoint import read_state_dict
    from .weights.sources import download
    from .errors import (
        CatalogueError,
        CheckpointFormatError,
        CheckpointMismatchError,
        CheckpointNotAvailableError,
        ConfigurationError,
        DatasetError,
        ConfigFormatError,
        ConfigVersionError,
        ForeignConfigError,
        InvalidClassesError,
        PretrainedNotFoundError,
        DeviceNotAvailableError,
        ImageReadError,
        IntegrityError,
        OutputConflictError,
        OutputWriteError,
        ResNeStZooError,
        UnknownModelError,
        UnsafeCheckpointError,
    )
    from .errors import (
        OptionalDependencyError,
        RuntimeFileError,
        RuntimeModelMismatchError,
        UnsupportedOpsetError,
    )
    from .deploy.onnx import export_onnx
    from .deploy.openvino import export_openvino
    from .inference.backends import RuntimeModel
    from .evaluation.result import EvaluationResult
    from .evaluation.runner import evaluate
    from .inference.batch import BatchSummary, predict_to_folder
    from .inference.prediction import Prediction
    from .models.optimize import optimize_for_inference
    from .hub.pretrained import from_pretrained
    from .models.segmentor import FCN, DeepLabV3, DeepLabV3Plus, PSPNet, Segmentor, TrainingOutput
    from .weights.integrity import verify
    from .serving import create_app, serve
