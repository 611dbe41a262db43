"""resnest_zoo: the ResNeSt-101 semantic segmentation checkpoints of sssegmentation, one line away.

>>> import resnest_zoo
>>> model = resnest_zoo.load("deeplabv3plus", "cityscapes")   # doctest: +SKIP
"""
from __future__ import annotations

from .api import build, list_models, load
from .cache import cached_files, clear_cache
from .catalogue import CheckpointEntry, get_entry
from .checkpoint import read_state_dict
from .download import download, export
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
from .segmentor import FCN, DeepLabV3, DeepLabV3Plus, PSPNet, Segmentor

__version__ = "0.1.0"

__all__ = [
    "load",
    "build",
    "list_models",
    "get_entry",
    "read_state_dict",
    "download",
    "verify",
    "export",
    "cached_files",
    "clear_cache",
    "CheckpointEntry",
    "Segmentor",
    "FCN",
    "PSPNet",
    "DeepLabV3",
    "DeepLabV3Plus",
    "ResNeStZooError",
    "UnknownModelError",
    "CatalogueError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "CheckpointNotAvailableError",
    "IntegrityError",
    "__version__",
]
