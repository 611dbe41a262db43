"""Reading a dataset as distributed: which image goes with which annotation, and what an annotation's values mean.

Each dataset module (:mod:`.voc`, :mod:`.ade20k`, :mod:`.cityscapes`) owns its own facts -- its folder layout
and its id table -- and describes itself with a :class:`DatasetReader`; this module holds what they share:

* :class:`LabelMapping`: the reference's ``clsid2label`` table (sssegmentation's dataset classes), applied exactly
  as the reference applies it (in the table's order, in place), giving class ids ``0..K-1`` and :data:`IGNORE`
  for pixels that do not count; any other value is an error naming the file and the values;
* :class:`Sample`: one image and its annotation, with an id;
* :func:`read_label_map`: an annotation PNG's stored values (palette index or grey level), mapped.

Torch-free (numpy and Pillow only, imported when a file is read), so the command line's ``list`` stays quick.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DatasetError
from ..files import walk
from .info import DatasetInfo

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "IGNORE",
    "REFERENCE_IGNORE",
    "LabelMapping",
    "Sample",
    "DatasetReader",
    "read_label_map",
    "locate_root",
    "check_pairs",
    "files_under",
    "check_sizes",
]

IGNORE = 255
"""The value of an ignored pixel in our label maps (``uint8``)."""

REFERENCE_IGNORE = -100
"""What the reference's tables map ignored values to (its ``ignore_index``)."""

ANNOTATION_MODES = ("P", "L")


@dataclass(frozen=True)
class LabelMapping:
    """Stored annotation value -> class id, as the reference's ``clsid2label`` dict of the dataset.

    ``table`` is that dict as pairs, in its order; stored values it does not name keep their value. After the
    mapping, a value in ``0..num_classes-1`` is a class, :data:`REFERENCE_IGNORE` is ignored, and anything else
    cannot occur in a correct annotation (the reference asserts the same).
    """

    num_classes: int
    table: tuple[tuple[int, int], ...]
    description: str = ""

    @classmethod
    def from_table(cls, num_classes: int, table: Mapping[int, int], description: str = "") -> LabelMapping:
        return cls(num_classes, tuple((int(k), int(v)) for k, v in table.items()), description)

    @cached_property
    def lookup(self) -> np.ndarray:
        """``int16[256]``: class id, :data:`IGNORE`, or -1 (a value the annotations cannot contain) per stored byte.

        Built by running the reference's own loop (``seg[seg == key] = value`` for each pair, in order, on float32)
        over every possible stored value, so the order of the table means what it means there.
        """
        import numpy as np

        values = np.arange(256, dtype=np.float32)
        for key, value in self.table:
            values[values == key] = value
        result = np.full(256, -1, dtype=np.int16)
        valid = (values >= 0) & (values < self.num_classes)
        result[valid] = values[valid].astype(np.int16)
        result[values == REFERENCE_IGNORE] = IGNORE
        return result

    def apply(self, stored: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
        """The ``uint8`` label map of stored values; :class:`DatasetError` naming ``path`` and the bad values."""
        import numpy as np

        mapped = self.lookup[stored]
        if (mapped < 0).any():
            bad = np.unique(stored[mapped < 0])
            shown = ", ".join(str(int(v)) for v in bad[:12]) + (" ..." if len(bad) > 12 else "")
            raise DatasetError(f"{path}: label values {shown} cannot occur in this dataset's annotations "
                               f"(expected {self.description or self.accepted()}); is this the right dataset or "
                               f"annotation file?")
        return mapped.astype(np.uint8)

    def accepted(self) -> str:
        """The stored values that are classes or ignored, as ranges (for messages)."""
        import numpy as np

        good = np.flatnonzero(self.lookup >= 0)
        ranges, start = [], good[0]
        for previous, current in zip(good, [*good[1:], None]):
            if current is None or current != previous + 1:
                ranges.append(f"{start}" if start == previous else f"{start}-{previous}")
                start = current
        return "values " + ", ".join(ranges)


@dataclass(frozen=True)
class Sample:
    """One image of a dataset split and its annotation (``id`` as the reference names it)."""

    id: str
    image: Path
    annotation: Path


@dataclass(frozen=True)
class DatasetReader:
    """How one dataset is laid out on disk: its splits and how many images each has as published, its folder tree
    (for messages and the docs), where to look for it under the folder a user gives, and how to list a split's
    :class:`Sample` s."""

    info: DatasetInfo
    labels: LabelMapping
    split_sizes: Mapping[str, int]
    layout: str
    candidates: Callable[[Path], list[Path]]
    is_root: Callable[[Path], bool]
    list_split: Callable[[Path, str], list[Sample]]
    annotations: Mapping[str, LabelMapping] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names, in the dataset's own order."""
        return tuple(self.split_sizes)

    def locate(self, data_root: str | os.PathLike[str]) -> Path:
        """The dataset's root folder: ``data_root`` itself or one of its usual parents' children."""
        return locate_root(Path(data_root), self.candidates(Path(data_root)), self.is_root, self.info.title,
                           self.layout)

    def samples(self, data_root: str | os.PathLike[str], split: str = "val") -> list[Sample]:
        """Every sample of ``split``, sorted by id, after checking that each image has its annotation and the
        reverse (:class:`DatasetError` lists what is missing)."""
        if split not in self.splits:
            raise DatasetError(f"{self.info.key} has no split {split!r}; expected one of {', '.join(self.splits)}")
        return self.list_split(self.locate(data_root), split)

    def mapping_for(self, annotation: Path) -> LabelMapping:
        """The id table of an annotation file: by its name's ending when the dataset has several kinds."""
        for ending, mapping in self.annotations.items():
            if annotation.name.endswith(ending):
                return mapping
        return self.labels


def locate_root(data_root: Path, candidates: Sequence[Path], is_root: Callable[[Path], bool], title: str,
                layout: str) -> Path:
    if not data_root.is_dir():
        raise DatasetError(f"data folder {str(data_root)!r} does not exist or is not a folder; expected the "
                           f"{title} folder:\n{layout}")
    for candidate in candidates:
        if is_root(candidate):
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetError(f"no {title} found in {str(data_root)!r} (looked in {looked}); expected:\n{layout}")


def files_under(folder: Path, suffix: str) -> list[Path]:
    """Files under ``folder`` whose name ends with ``suffix``, sorted, walked as every folder of the package is
    (:func:`resnest_zoo.files.walk`: following links to folders, each once; links that point nowhere included, so
    that they are reported as missing files); :class:`DatasetError` when the folder is missing."""
    if not folder.is_dir():
        raise DatasetError(f"folder {str(folder)!r} is missing")
    return walk(folder, endings=(suffix,))


def check_pairs(samples: Iterable[Sample], orphans: Iterable[Path] = (), *, what: str) -> list[Sample]:
    """``samples`` when every image and annotation exists and no annotation is an ``orphan`` (a file without its
    image); else one :class:`DatasetError` listing the first problems of each kind."""
    samples = list(samples)
    missing_images = [s for s in samples if not s.image.is_file()]
    missing_annotations = [s for s in samples if s.image.is_file() and not s.annotation.is_file()]
    orphans = sorted(orphans)
    problems = []
    if missing_images:
        problems.append(_listed(f"{len(missing_images)} image(s) listed in {what} are missing",
                                [str(s.image) for s in missing_images]))
    if missing_annotations:
        problems.append(_listed(f"{len(missing_annotations)} image(s) have no annotation",
                                [f"{s.image} (expected {s.annotation})" for s in missing_annotations]))
    if orphans:
        problems.append(_listed(f"{len(orphans)} annotation(s) have no image", [str(p) for p in orphans]))
    if problems:
        raise DatasetError("; ".join(problems) + "; restore the missing files or point --data at a complete copy")
    if not samples:
        raise DatasetError(f"{what} holds no images")
    return samples


def _header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file's header as the picture will be read (EXIF orientation applied)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if opened.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees one way or the other
                width, height = height, width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc}); expected an image file") from None
    return width, height


def check_sizes(samples: Iterable[Sample]) -> None:
    """:class:`DatasetError` when an annotation's size differs from its image's, from the files' headers alone
    (fast: nothing is decoded), listing the first mismatches; so a long run does not stop on one halfway."""
    mismatches = []
    for sample in samples:
        image, annotation = _header_size(sample.image), _header_size(sample.annotation)
        if image != annotation:
            mismatches.append(f"{sample.annotation} is {annotation[0]}x{annotation[1]} but {sample.image} is "
                              f"{image[0]}x{image[1]}")
    if mismatches:
        raise DatasetError(_listed(f"{len(mismatches)} annotation(s) differ in size from their image", mismatches)
                           + "; each annotation must have its image's size")


def _listed(title: str, items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title}: {', '.join(items[:limit])}{more}"


def read_label_map(path: str | os.PathLike[str], mapping: LabelMapping) -> np.ndarray:
    """The class ids of an annotation PNG (``uint8``, :data:`IGNORE` where ignored).

    The stored values are the palette indices of a palette PNG (``P``, as VOC's ``SegmentationClass``) or the grey
    levels of a greyscale one (``L``, as ADE20K's and Cityscapes' files). The reference reads annotations with
    ``cv2.imread(..., IMREAD_GRAYSCALE)``, which gives the same values for greyscale files (the ones its data
    preparation writes); on palette files it would read the colours' luminance, not the classes, so the stored
    index is used. Colour (RGB) annotations are refused: their classes cannot be read without guessing.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            mode = opened.mode
            if mode not in ANNOTATION_MODES:
                raise DatasetError(f"{path}: annotation of mode {mode!r}; expected a palette (P) or greyscale (L) "
                                   f"PNG whose pixel values are the stored label ids")
            stored = np.asarray(opened)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: annotation cannot be read ({exc}); expected a palette or greyscale PNG") from None
    return mapping.apply(stored, path)
