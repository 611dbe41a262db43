"""The published training recipe: the settings every one of the twelve checkpoints was trained with.

They are those of sssegmentation's configs for these models (``ssseg/configs/resnest/base_cfg.py``, which each
``*_resnest101os8_*.py`` config imports, and the same values in the older ``ssseg/configs/{fcn,pspnet,deeplabv3,
deeplabv3plus}/base_cfg.py``):

.. code-block:: python

    'losses': {
        'loss_aux': {'type': 'CrossEntropyLoss', 'scale_factor': 0.4, 'ignore_index': 255, 'reduction': 'mean'},
        'loss_cls': {'type': 'CrossEntropyLoss', 'scale_factor': 1.0, 'ignore_index': 255, 'reduction': 'mean'},
    },
    'scheduler': {'type': 'PolyScheduler', 'power': 0.9,
                  'optimizer': {'type': 'SGD', 'lr': 0.01, 'momentum': 0.9, 'weight_decay': 5e-4}},

and the reference's ``BaseScheduler`` sets ``min_lr`` to ``lr * 0.01`` when a config gives none (none does). The
per-checkpoint figures (learning rate, batch size, epochs, crop size) are the catalogue's (``entry.schedule``,
``entry.crop_size``). ``tests/test_finetune.py`` checks the loss and the schedule against the reference's code.
"""
from __future__ import annotations

from ..datasets.annotations import IGNORE

__all__ = ["AUXILIARY_LOSS_WEIGHT", "IGNORE_INDEX", "POLY_POWER", "MIN_LR_RATIO", "MOMENTUM", "WEIGHT_DECAY"]

AUXILIARY_LOSS_WEIGHT = 0.4
"""Weight of the auxiliary head's cross-entropy in the total loss (the main head's weighs 1.0)."""

IGNORE_INDEX = IGNORE
"""Label value of pixels that count in no loss (VOC's object borders, Cityscapes' void, crop padding): the
datasets' own ignored value."""

POLY_POWER = 0.9
"""Exponent of the poly learning-rate decay: ``lr = (lr0 - min_lr) * (1 - step / steps) ** 0.9 + min_lr``."""

MIN_LR_RATIO = 0.01
"""The learning rate the poly schedule ends at, as a fraction of the initial one."""

MOMENTUM = 0.9
"""SGD momentum."""

WEIGHT_DECAY = 5e-4
"""SGD weight decay (L2), applied to every parameter."""
