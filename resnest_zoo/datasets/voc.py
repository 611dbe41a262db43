"""PASCAL VOC 2012: class names and palette (in the order of the model's output channels), folder layout and ids."""
from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .annotations import REFERENCE_IGNORE, DatasetReader, LabelMapping, Sample, check_pairs
from .info import DatasetInfo

__all__ = ["INFO", "CLASS_NAMES", "PALETTE", "CLSID2LABEL", "LABELS", "SPLIT_SIZES", "SPLITS", "LAYOUT", "READER"]

CLASS_NAMES = (
    '__background__',
    'aeroplane',
    'bicycle',
    'bird',
    'boat',
    'bottle',
    'bus',
    'car',
    'cat',
    'chair',
    'cow',
    'diningtable',
    'dog',
    'horse',
    'motorbike',
    'person',
    'pottedplant',
    'sheep',
    'sofa',
    'train',
    'tvmonitor',
)

PALETTE = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
    (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0),
    (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0),
    (0, 192, 0), (128, 192, 0), (0, 64, 128),
)

INFO = DatasetInfo('voc', 'PASCAL VOC 2012 (20 object classes + background)', CLASS_NAMES, PALETTE)

CLSID2LABEL = {255: REFERENCE_IGNORE}
"""Stored value -> class id: sssegmentation's ``VOCDataset.clsid2label`` (0-20 are the classes themselves)."""

LABELS = LabelMapping.from_table(len(CLASS_NAMES), CLSID2LABEL, "values 0-20 (classes) and 255 (ignored border)")

SPLIT_SIZES = {"train": 1464, "val": 1449, "trainval": 2913}
"""Images in each split as VOC 2012 publishes it (``ImageSets/Segmentation``)."""

SPLITS = tuple(SPLIT_SIZES)

LAYOUT = f"""VOCdevkit/VOC2012/
|-- JPEGImages/                 2007_000033.jpg ...
|-- SegmentationClass/          2007_000033.png ...  (palette PNGs: index = class, 255 = ignored border)
`-- ImageSets/Segmentation/     train.txt, val.txt ({SPLIT_SIZES['val']:,} ids), trainval.txt"""


def _candidates(root: Path) -> list[Path]:
    return [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]


def _is_root(path: Path) -> bool:
    return (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir()


def _list_split(root: Path, split: str) -> list[Sample]:
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        raise DatasetError(f"split list {str(split_file)!r} is missing; VOC lists the images of each split in "
                           f"ImageSets/Segmentation/{{{','.join(SPLITS)}}}.txt (part of VOCtrainval_11-May-2012.tar)")
    ids = sorted({line.strip() for line in split_file.read_text().splitlines() if line.strip()})
    samples = [Sample(i, root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
    return check_pairs(samples, what=str(split_file))


READER = DatasetReader(INFO, LABELS, SPLIT_SIZES, LAYOUT, _candidates, _is_root, _list_split)
