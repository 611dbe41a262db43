"""Training data: image/mask pairs (:class:`SegmentationFolder`) and the reference's training pipeline
(:class:`TrainingTransform`).

Pairs come either from one of the three datasets in the layout it is distributed in
(:meth:`SegmentationFolder.from_dataset`, through the same readers and label tables as ``evaluate``), or from
the simplest layout a user can make for classes of their own::

    my_data/
        images/  a.jpg  b.png  sub/c.jpg ...     any image Pillow reads
        masks/   a.png  b.png  sub/c.png ...     one PNG per image, same relative name: class ids 0..K-1 as the
                                                 palette index (mode P) or grey level (mode L); 255 = ignored

Pairs are matched by relative path without extension; an image without a mask (or the reverse), a mask whose
size differs from its image's, or one holding values other than a class id or 255 is a
:class:`~resnest_zoo.errors.DatasetError` naming the files (the checks of :mod:`resnest_zoo.datasets`).
"""
from __future__ import annotations

import os
import random
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..catalogue import resolve_dataset
from ..config import Preprocessing
from ..datasets import READERS
from ..files import IMAGE_SUFFIXES, walk
from ..datasets.annotations import REFERENCE_IGNORE, LabelMapping, Sample, check_pairs, check_sizes, read_label_map
from ..inference.preprocess import keep_ratio_size, normalize, parse_image, resize_like_cv2
from .recipe import IGNORE_INDEX

__all__ = ["SegmentationFolder", "TrainingTransform"]


def _by_stem(folder: Path, suffixes: Collection[str]) -> dict[str, Path]:
    """The files below ``folder`` (:func:`resnest_zoo.files.walk`) with one of ``suffixes``, by relative name."""
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in walk(folder, endings=suffixes)}


def class_id_mapping(num_classes: int) -> LabelMapping:
    """Masks of one's own: stored values ``0..num_classes-1`` are the classes, 255 is ignored, nothing else occurs."""
    return LabelMapping.from_table(num_classes, {IGNORE_INDEX: REFERENCE_IGNORE},
                                   f"class ids 0-{num_classes - 1}, or {IGNORE_INDEX} (ignored)")


class SegmentationFolder(torch.utils.data.Dataset):
    """Image/mask pairs: ``root/images`` with ``root/masks`` (see the module docstring), or a dataset split
    (:meth:`from_dataset`).

    Item ``i`` is ``(image, mask)``: without a ``transform``, the RGB ``uint8`` image ``(3, H, W)`` and the
    ``int64`` mask ``(H, W)`` of class ids (255 ignored); with one, whatever ``transform(image, mask)`` returns
    (e.g. :class:`TrainingTransform`).
    """

    def __init__(self, root: str | os.PathLike[str], *, num_classes: int, images: str = "images", masks: str = "masks",
                 transform: TrainingTransform | None = None) -> None:
        root = Path(root)
        image_dir, mask_dir = root / images, root / masks
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} is not a folder: expected {root}/{images}/ with the images and "
                                        f"{root}/{masks}/ with one PNG mask per image (same name)")
        image_files, mask_files = _by_stem(image_dir, IMAGE_SUFFIXES), _by_stem(mask_dir, (".png",))
        samples = [Sample(name, path, mask_dir / f"{name}.png") for name, path in image_files.items()]
        orphans = [path for name, path in mask_files.items() if name not in image_files]
        samples = check_pairs(samples, orphans, what=f"{image_dir}")
        mapping = class_id_mapping(num_classes)
        self._setup(samples, {sample.annotation: mapping for sample in samples}, num_classes, transform)

    @classmethod
    def from_dataset(cls, dataset: str, data_root: str | os.PathLike[str], *, split: str = "train",
                     transform: TrainingTransform | None = None) -> SegmentationFolder:
        """A split of VOC, ADE20K or Cityscapes as distributed (the layouts ``resnest-zoo eval`` reads), its
        annotations mapped to the class ids the checkpoints predict, exactly as for evaluation."""
        reader = READERS[resolve_dataset(dataset)]
        samples = reader.samples(data_root, split)
        folder = cls.__new__(cls)
        folder._setup(samples, {s.annotation: reader.mapping_for(s.annotation) for s in samples},
                      reader.info.num_classes, transform)
        return folder

    def _setup(self, samples: list[Sample], mappings: Mapping[Path, LabelMapping], num_classes: int,
               transform: TrainingTransform | None) -> None:
        check_sizes(samples)  # from the files' headers: a bad pair fails now, not at epoch 3
        self.samples = samples
        self.mappings = dict(mappings)
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = parse_image(sample.image).pixels
        labels = read_label_map(sample.annotation, self.mappings[sample.annotation])
        mask = torch.from_numpy(labels.astype(np.int64))
        return self.transform(image, mask) if self.transform is not None else (image, mask)


class TrainingTransform:
    """The reference's training pipeline, in short: keep-ratio resize to the model's test-time size times a random
    scale in ``scale_range``, a random ``crop_size`` crop, a random horizontal flip, normalisation, and padding to
    ``crop_size`` (image 0, mask :data:`~resnest_zoo.training.recipe.IGNORE_INDEX`).

    ``(image uint8 (3, H, W), mask int64 (H, W))`` -> ``(float32 (3, h, w), int64 (h, w))``. ``crop_size=None``
    keeps the whole resized image; ``scale_range=None`` and ``flip=False`` make it deterministic.
    """

    def __init__(self, preprocessing: Preprocessing, *, crop_size: Sequence[int] | None = None,
                 scale_range: tuple[float, float] | None = (0.5, 2.0), flip: bool = True) -> None:
        self.preprocessing = preprocessing
        self.crop_size = None if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
        self.scale_range = scale_range
        self.flip = flip

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = 1.0 if self.scale_range is None else random.uniform(*self.scale_range)
        target = [int(side * scale) for side in self.preprocessing.resize]
        size = keep_ratio_size(int(image.shape[1]), int(image.shape[2]), target)
        image = resize_like_cv2(image, size)
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        if self.crop_size is not None:
            top = random.randint(0, max(0, size[0] - self.crop_size[0]))
            left = random.randint(0, max(0, size[1] - self.crop_size[1]))
            image = image[:, top:top + self.crop_size[0], left:left + self.crop_size[1]]
            mask = mask[top:top + self.crop_size[0], left:left + self.crop_size[1]]
        if self.flip and random.random() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        pixels = normalize(image, self.preprocessing.mean, self.preprocessing.std)
        if self.crop_size is not None:
            pad = (0, self.crop_size[1] - pixels.shape[2], 0, self.crop_size[0] - pixels.shape[1])
            pixels, mask = F.pad(pixels, pad, value=0.0), F.pad(mask, pad, value=IGNORE_INDEX)
        return pixels.contiguous(), mask.contiguous()
