"""Cityscapes: class names and palette, in the order of the model's output channels."""
from __future__ import annotations

from .info import DatasetInfo

__all__ = ["INFO", "CLASS_NAMES", "PALETTE"]

CLASS_NAMES = (
    'road',
    'sidewalk',
    'building',
    'wall',
    'fence',
    'pole',
    'traffic_light',
    'traffic_sign',
    'vegetation',
    'terrain',
    'sky',
    'person',
    'rider',
    'car',
    'truck',
    'bus',
    'train',
    'motorcycle',
    'bicycle',
)

PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230),
    (119, 11, 32),
)

INFO = DatasetInfo('cityscapes', 'Cityscapes (19 evaluation classes, train ids)', CLASS_NAMES, PALETTE)
