"""Small synthetic datasets in the three distributed layouts, and a stand-in segmentor that reads colours.

Every picture is made of rectangles, each painted in the palette colour of its class, so that
:class:`ColourSegmentor` (per pixel: the class whose palette colour is nearest) predicts most pixels right and its
mIoU is meaningful. The annotations hold, on purpose:

* ignored pixels (VOC's 255 border, ADE20K's 0 "other", Cityscapes ids outside the 19 classes);
* a class present in the ground truth but never predicted (its rectangle is painted in another class's colour);
* classes absent from both (most of them).

Files are what the datasets distribute: JPEG pictures for VOC and ADE20K, PNG for Cityscapes; palette PNG
annotations for VOC, greyscale ones for ADE20K and Cityscapes; plus the split lists the reference's own dataset
classes read (VOC's ``ImageSets``, and ``val.txt`` files for ADE20K and Cityscapes, which its data preparation
writes), so that the reference can read the same folders.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnest_zoo.catalogue import get_entry
from resnest_zoo.datasets import cityscapes, voc
from resnest_zoo.models.segmentor import Segmentor

SIZES = [(96, 64), (120, 90), (200, 150), (64, 128), (150, 200)]  # (width, height), all within 64-200 px
CITY_SIZES = [(128, 64), (200, 100), (160, 80), (96, 64)]
NEVER_PREDICTED = {"voc": (5, 6), "ade20k": (3, 4), "cityscapes": (5, 6)}  # (class in the labels, colour used)
USED_CLASSES = {"voc": (0, 1, 2, 5, 15), "ade20k": (0, 2, 3, 7, 12), "cityscapes": (0, 1, 2, 5, 13)}
CITIES = ("aachen", "frankfurt")


def _layout(seed: int, size: tuple[int, int], key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, colour classes)``: per pixel, the class of the annotation and the class whose colour is painted,
    and -1 where the pixel is ignored."""
    rng = np.random.default_rng(seed)
    width, height = size
    classes = np.full((height, width), USED_CLASSES[key][0], dtype=np.int64)
    for cls in USED_CLASSES[key][1:]:
        top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
        classes[top:top + int(rng.integers(height // 4, height // 2 + 1)),
                left:left + int(rng.integers(width // 4, width // 2 + 1))] = cls
    classes[:, :3] = -1  # an ignored border
    colours = classes.copy()
    hidden, shown = NEVER_PREDICTED[key]
    colours[classes == hidden] = shown
    return classes, colours


def _picture(colours: np.ndarray, palette) -> np.ndarray:
    table = np.asarray(palette, dtype=np.uint8)
    picture = table[np.clip(colours, 0, None)]
    picture[colours < 0] = (90, 90, 90)
    return picture


def _save_palette_png(values: np.ndarray, path: Path, palette) -> None:
    image = Image.fromarray(values.astype(np.uint8), mode="L").convert("P")
    flat = [c for rgb in palette for c in rgb]
    image.putpalette(flat + [224, 224, 192] * (256 - len(palette)))
    image.save(path)


def write_voc(root: Path, count: int = 5, seed: int = 0) -> Path:
    """``root/VOCdevkit/VOC2012`` with ``count`` val images (and the same as train); returns ``root``."""
    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"2007_{seed * 100 + i:06d}" for i in range(count)]
    for i, image_id in enumerate(ids):
        classes, colours = _layout(seed * 100 + i, SIZES[i % len(SIZES)], "voc")
        Image.fromarray(_picture(colours, voc.PALETTE)).save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
        _save_palette_png(np.where(classes < 0, 255, classes), base / "SegmentationClass" / f"{image_id}.png",
                          voc.PALETTE)
    for split in ("train", "val", "trainval"):
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def write_ade20k(root: Path, count: int = 5, seed: int = 0, sizes: list[tuple[int, int]] = SIZES) -> Path:
    """``root/ADEChallengeData2016`` with ``count`` validation images; returns ``root``."""
    from resnest_zoo.datasets import ade20k

    base = root / "ADEChallengeData2016"
    ids = [f"ADE_val_{seed * 100 + i + 1:08d}" for i in range(count)]
    for split in ("training", "validation"):
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
    for i, image_id in enumerate(ids):
        classes, colours = _layout(seed * 100 + i, sizes[i % len(sizes)], "ade20k")
        Image.fromarray(_picture(colours, ade20k.PALETTE)).save(base / "images" / "validation" / f"{image_id}.jpg",
                                                                quality=95)
        Image.fromarray(np.where(classes < 0, 0, classes + 1).astype(np.uint8), mode="L").save(
            base / "annotations" / "validation" / f"{image_id}.png")
    (base / "val.txt").write_text("".join(f"{i}\n" for i in ids))  # what the reference's data preparation writes
    return root


def write_cityscapes(root: Path, count: int = 4, seed: int = 0, train_ids: tuple[int, ...] = (),
                     sizes: list[tuple[int, int]] = CITY_SIZES) -> Path:
    """``root/cityscapes`` with ``count`` val images in two cities (label-id annotations, or train-id ones for the
    positions in ``train_ids``); returns ``root``."""
    base = root / "cityscapes"
    label_ids = np.full(256, 0, dtype=np.uint8)
    for train_id, label_id in cityscapes.TRAIN_ID_TO_LABEL_ID.items():
        label_ids[train_id] = label_id
    ids = []
    for i in range(count):
        city = CITIES[i % len(CITIES)]
        stem = f"{city}_{seed:06d}_{i:06d}"
        for folder in ("leftImg8bit", "gtFine"):
            (base / folder / "val" / city).mkdir(parents=True, exist_ok=True)
        classes, colours = _layout(seed * 100 + i, sizes[i % len(sizes)], "cityscapes")
        Image.fromarray(_picture(colours, cityscapes.PALETTE)).save(base / "leftImg8bit" / "val" / city /
                                                                    f"{stem}_leftImg8bit.png")
        if i in train_ids:
            values = np.where(classes < 0, 255, classes).astype(np.uint8)
            name = f"{stem}_gtFine_labelTrainIds.png"
        else:
            values = label_ids[np.clip(classes, 0, None)]
            values[classes < 0] = (4, 9, 1)[i % 3]  # static, parking, ego vehicle: ignored in evaluation
            name = f"{stem}_gtFine_labelIds.png"
        Image.fromarray(values, mode="L").save(base / "gtFine" / "val" / city / name)
        ids.append(f"{city}/{stem}_leftImg8bit")
    (base / "val.txt").write_text("".join(f"{i}\n" for i in sorted(ids)))
    return root


WRITERS = {"voc": write_voc, "ade20k": write_ade20k, "cityscapes": write_cityscapes}
MODELS = {"voc": ("fcn", "voc"), "ade20k": ("pspnet", "ade20k"), "cityscapes": ("deeplabv3plus", "cityscapes")}


class ColourSegmentor(Segmentor):
    """Per pixel, logits = minus the squared distance between the (normalised) pixel and each class's palette
    colour: the nearest colour wins. Has the catalogue entry and a config whose test-time resize is ``resize``."""

    def __init__(self, dataset: str, resize: tuple[int, int] = (128, 96), delay: float = 0.0) -> None:
        entry = get_entry(*MODELS[dataset])
        config = replace(entry.config, preprocessing=replace(entry.config.preprocessing, resize=resize))
        super().__init__(nn.Identity(), config.num_classes)
        pre = config.preprocessing
        palette = torch.tensor(config.palette, dtype=torch.float32)
        centres = (palette - torch.tensor(pre.mean)) / torch.tensor(pre.std)
        self.register_buffer("centres", centres)
        self.scale = nn.Parameter(torch.ones(()))
        self.config, self.entry = config, entry
        self.calls: list[tuple[int, ...]] = []
        self.delay = delay  # seconds per forward pass: a slow network, for tests that stop a run part-way

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(images.shape))
        if self.delay:
            time.sleep(self.delay)
        difference = images[:, None] - self.centres[None, :, :, None, None]
        return -(difference ** 2).sum(2) * self.scale


@pytest.fixture(scope="session")
def synthetic_datasets(tmp_path_factory) -> dict[str, Path]:
    """The three layouts, written once per session (read-only for the tests: copy before changing); the folder to
    pass as ``data_root`` for each dataset key (the parent of the dataset's own folder)."""
    base = tmp_path_factory.mktemp("datasets")
    return {"voc": write_voc(base / "voc"), "ade20k": write_ade20k(base / "ade20k"),
            "cityscapes": write_cityscapes(base / "cityscapes")}
