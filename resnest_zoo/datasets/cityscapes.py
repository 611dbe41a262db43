"""Cityscapes: class names and palette (in the order of the model's output channels), folder layout, label ids."""
from __future__ import annotations

from pathlib import Path

from .annotations import REFERENCE_IGNORE, DatasetReader, LabelMapping, Sample, check_pairs, files_under
from .info import DatasetInfo

__all__ = [
    "INFO", "CLASS_NAMES", "PALETTE", "CLSID2LABEL", "LABELS", "TRAIN_ID_LABELS", "TRAIN_ID_TO_LABEL_ID",
    "LABEL_ID_PALETTE", "SPLIT_SIZES", "SPLITS", "LAYOUT", "READER", "IMAGE_SUFFIX",
]

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

CLSID2LABEL = {
    -1: REFERENCE_IGNORE, 0: REFERENCE_IGNORE, 1: REFERENCE_IGNORE, 2: REFERENCE_IGNORE, 3: REFERENCE_IGNORE,
    4: REFERENCE_IGNORE, 5: REFERENCE_IGNORE, 6: REFERENCE_IGNORE, 7: 0, 8: 1, 9: REFERENCE_IGNORE,
    10: REFERENCE_IGNORE, 11: 2, 12: 3, 13: 4, 14: REFERENCE_IGNORE, 15: REFERENCE_IGNORE, 16: REFERENCE_IGNORE,
    17: 5, 18: REFERENCE_IGNORE, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15,
    29: REFERENCE_IGNORE, 30: REFERENCE_IGNORE, 31: 16, 32: 17, 33: 18,
}
"""Label id (``*_gtFine_labelIds.png``) -> train id: sssegmentation's ``CityScapesDataset.clsid2label``."""

LABELS = LabelMapping.from_table(len(CLASS_NAMES), CLSID2LABEL, "label ids 0-33 (*_gtFine_labelIds.png)")

TRAIN_ID_LABELS = LabelMapping.from_table(len(CLASS_NAMES), {255: REFERENCE_IGNORE},
                                          "train ids 0-18 and 255 (*_gtFine_labelTrainIds.png)")
"""The train-id files cityscapesscripts' ``createTrainIdLabelImgs`` writes: already train ids, 255 ignored."""

TRAIN_ID_TO_LABEL_ID = {0: 7, 1: 8, 2: 11, 3: 12, 4: 13, 5: 17, 6: 19, 7: 20, 8: 21, 9: 22, 10: 23, 11: 24,
                        12: 25, 13: 26, 14: 27, 15: 28, 16: 31, 17: 32, 18: 33}
"""Train id -> the official label id the evaluation server expects (cityscapesscripts' ``trainId2label``)."""

LABEL_ID_PALETTE = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 142),
)
"""Colour of each label id 0-33, then of the license plate (id -1), as the reference's ``formatresults`` draws
label-id files (cityscapesscripts' ``id2label`` colours)."""

SPLIT_SIZES = {"train": 2975, "val": 500}
"""Images in each split of the finely annotated set as Cityscapes publishes it (``gtFine``)."""

SPLITS = tuple(SPLIT_SIZES)
IMAGE_SUFFIX = "_leftImg8bit.png"
_ANNOTATION_SUFFIXES = ("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")  # preferred first

LAYOUT = f"""cityscapes/
|-- leftImg8bit/{{train,val}}/<city>/   frankfurt_000000_000294_leftImg8bit.png ...  (val: {SPLIT_SIZES['val']:,} images)
`-- gtFine/{{train,val}}/<city>/        frankfurt_000000_000294_gtFine_labelIds.png ...
                                      (or *_gtFine_labelTrainIds.png made by cityscapesscripts)"""


def _candidates(root: Path) -> list[Path]:
    return [root, root / "cityscapes"]


def _is_root(path: Path) -> bool:
    return (path / "leftImg8bit").is_dir() and (path / "gtFine").is_dir()


def _list_split(root: Path, split: str) -> list[Sample]:
    image_dir, annotation_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    images = files_under(image_dir, IMAGE_SUFFIX)
    prefixes = set()
    samples = []
    for image in images:
        relative = image.relative_to(image_dir).as_posix()
        prefix = relative[: -len(IMAGE_SUFFIX)]
        prefixes.add(prefix)
        candidates = [annotation_dir / f"{prefix}{suffix}" for suffix in _ANNOTATION_SUFFIXES]
        annotation = next((c for c in candidates if c.is_file()), candidates[0])
        samples.append(Sample(relative[: -len(".png")], image, annotation))
    orphans = [a for suffix in _ANNOTATION_SUFFIXES for a in files_under(annotation_dir, suffix)
               if a.relative_to(annotation_dir).as_posix()[: -len(suffix)] not in prefixes]
    return check_pairs(samples, orphans, what=str(image_dir))


READER = DatasetReader(INFO, LABELS, SPLIT_SIZES, LAYOUT, _candidates, _is_root, _list_split,
                       annotations={"_gtFine_labelTrainIds.png": TRAIN_ID_LABELS, "_gtFine_labelIds.png": LABELS})
