"""Fine-tuning: the published loss, optimiser and schedule, and a reader for a folder of images and masks.

A model to fine-tune comes from :func:`resnest_zoo.load` with new classes (``num_classes=``, ``class_names=``,
``auxiliary_head=True``, ``freeze=``); in training mode it returns a :class:`~resnest_zoo.TrainingOutput` that
:func:`segmentation_loss` takes as it is. ``examples/finetune.py`` is a complete loop.
"""
from __future__ import annotations

from .data import SegmentationFolder, TrainingTransform
from .loss import segmentation_loss
from .recipe import AUXILIARY_LOSS_WEIGHT, IGNORE_INDEX, MIN_LR_RATIO, MOMENTUM, POLY_POWER, WEIGHT_DECAY
from .schedule import poly_lr_scheduler, sgd

__all__ = [
    "segmentation_loss",
    "sgd",
    "poly_lr_scheduler",
    "SegmentationFolder",
    "TrainingTransform",
    "AUXILIARY_LOSS_WEIGHT",
    "IGNORE_INDEX",
    "POLY_POWER",
    "MIN_LR_RATIO",
    "MOMENTUM",
    "WEIGHT_DECAY",
]
