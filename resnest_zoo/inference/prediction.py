"""The result of :meth:`Segmentor.predict`: a label map plus what is needed to read and draw it."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["Prediction"]


class Prediction:
    """Per-pixel classes of one image, at the image's original size.

    Attributes:
        labels: ``(H, W)`` class indices into ``class_names``; ``uint8`` when there are at most 256 classes
            (all catalogue datasets), else ``int64``.
        class_names: the dataset's class names, in the model's output order.
        palette: ``(K, 3)`` ``uint8`` RGB colour per class (the dataset's own palette).
        image: the input as ``(H, W, 3)`` RGB ``uint8`` (what the model saw before resizing), for overlays;
            ``None`` when not kept.
        probabilities: ``(K, H, W)`` float32 class probabilities (softmax of the averaged logits), only when
            ``predict(..., probabilities=True)``; else ``None``.
    """

    __slots__ = ("labels", "class_names", "palette", "image", "probabilities")

    def __init__(self, labels: np.ndarray, class_names: Sequence[str], palette: np.ndarray | Sequence[Sequence[int]],
                 image: np.ndarray | None = None, probabilities: np.ndarray | None = None) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be an (H, W) integer array, got shape {labels.shape} and dtype {labels.dtype}")
        palette = np.asarray(palette, dtype=np.uint8)
        if palette.shape != (len(class_names), 3):
            raise ValueError(f"palette must be ({len(class_names)}, 3) for {len(class_names)} classes, got {palette.shape}")
        if image is not None and image.shape != (*labels.shape, 3):
            raise ValueError(f"image must be {(*labels.shape, 3)} to match the labels, got {image.shape}")
        if probabilities is not None and probabilities.shape != (len(class_names), *labels.shape):
            raise ValueError(f"probabilities must be {(len(class_names), *labels.shape)}, got {probabilities.shape}")
        self.labels = labels
        self.class_names = tuple(class_names)
        self.palette = palette
        self.image = image
        self.probabilities = probabilities

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the label map (= the input image)."""
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    def colorize(self) -> Image.Image:
        """The label map drawn in the dataset palette, as an RGB image."""
        return Image.fromarray(self.palette[self.labels])

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """The input image with the colourised labels blended on top (``alpha`` = weight of the colours)."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if self.image is None:
            raise ValueError("this prediction carries no input image to draw on; use colorize() instead")
        colours = self.palette[self.labels].astype(np.float32)
        blended = (1.0 - alpha) * self.image.astype(np.float32) + alpha * colours
        return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))

    def to_pil(self) -> Image.Image:
        """The labels as an indexed (``P`` mode) image whose palette is the dataset's: pixel values are class ids."""
        if self.num_classes > 256:
            raise ValueError(f"{self.num_classes} classes do not fit an indexed image (256 at most); "
                             f"save prediction.labels with numpy.save instead")
        image = Image.fromarray(np.ascontiguousarray(self.labels, dtype=np.uint8))  # mode "L"
        image.putpalette(self.palette.reshape(-1).tolist())  # an "L" image given a palette becomes "P"
        return image

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the labels as an indexed PNG: pixel value = class id, colours = the dataset palette.

        The file reads back losslessly (``np.asarray(Image.open(path))`` gives ``labels``) and shows in colour
        in any image viewer. Only ``.png`` is accepted, since lossy formats would corrupt the class ids.
        """
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"save() writes an indexed PNG, so the file name must end with .png, got {str(path)!r}")
        self.to_pil().save(path, format="PNG")
        return path

    def summary(self) -> list[tuple[str, float]]:
        """``(class name, fraction of pixels)`` for each class present, largest first."""
        counts = np.bincount(self.labels.reshape(-1), minlength=self.num_classes)
        present = np.flatnonzero(counts)
        order = present[np.argsort(-counts[present], kind="stable")]
        total = float(self.labels.size)
        return [(self.class_names[i], float(counts[i]) / total) for i in order]

    def __repr__(self) -> str:
        height, width = self.size
        top = ", ".join(f"{name.split(',')[0]} {fraction:.1%}" for name, fraction in self.summary()[:5])
        extra = ", with probabilities" if self.probabilities is not None else ""
        return f"Prediction({width}x{height} px, {self.num_classes} classes{extra}; {top})"

    def _repr_png_(self) -> bytes:
        """Jupyter display: the overlay when the input image is known, else the colourised labels."""
        picture = self.overlay() if self.image is not None else self.colorize()
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()
