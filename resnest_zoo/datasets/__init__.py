"""The three datasets the checkpoints were trained on: one module each (class names, palettes ...).

The class order is the order of the model's output channels: ``labels == i`` means ``class_names[i]``.
Palettes are RGB triples, the ones the datasets' own tooling uses to draw masks.
"""
from __future__ import annotations

from . import ade20k, cityscapes, voc
from .annotations import DatasetReader
from .info import DatasetInfo

__all__ = ["DatasetInfo", "DATASETS", "DatasetReader", "READERS"]

DATASETS: dict[str, DatasetInfo] = {module.INFO.key: module.INFO for module in (voc, ade20k, cityscapes)}
READERS: dict[str, DatasetReader] = {module.INFO.key: module.READER for module in (voc, ade20k, cityscapes)}
"""Each dataset's folder layout and id table, to evaluate on a copy of it (:mod:`.annotations`)."""
