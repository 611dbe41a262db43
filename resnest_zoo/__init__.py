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
    "read_state_dict": "checkpoint",
    "download": "sources",
    "export": "sources",
    "verify": "integrity",
    "cached_files": "cache",
    "clear_cache": "cache",
    "optimize_for_inference": "optimize",
    "Segmentor": "segmentor",
    "FCN": "segmentor",
    "PSPNet": "segmentor",
    "DeepLabV3": "segmentor",
    "DeepLabV3Plus": "segmentor",
    "Prediction": "prediction",
    "ResNeStZooError": "errors",
    "UnknownModelError": "errors",
    "CatalogueError": "errors",
    "CheckpointFormatError": "errors",
    "CheckpointMismatchError": "errors",
    "UnsafeCheckpointError": "errors",
    "CheckpointNotAvailableError": "errors",
    "IntegrityError": "errors",
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
    from .cache import cached_files, clear_cache
    from .catalogue import CheckpointEntry, get_entry
    from .checkpoint import read_state_dict
    from .sources import download, export
    from .errors import (
        CatalogueError,
        CheckpointFormatError,
        CheckpointMismatchError,
        CheckpointNotAvailableError,
        IntegrityError,
        ResNeStZooError,
        UnknownModelError,
        UnsafeCheckpointError,
    )
    from .integrity import verify
    from .optimize import optimize_for_inference
    from .prediction import Prediction
    from .segmentor import FCN, DeepLabV3, DeepLabV3Plus, PSPNet, Segmentor
