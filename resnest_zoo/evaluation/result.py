"""What :func:`resnest_zoo.evaluate` returns: the figures, the per-class table, and the published mIoU to compare."""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..metric import SegmentationMetrics, segmentation_metrics

__all__ = ["EvaluationResult"]


def _percent(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


@dataclass(frozen=True)
class EvaluationResult:
    """An evaluation's outcome. Figures are fractions (0-1), shown as percentages.

    Attributes:
        model: what was evaluated (``"deeplabv3plus/cityscapes"``, or the class name of a model of one's own).
        dataset, split: the data it was evaluated on.
        class_names: the classes, in the model's output order.
        confusion: ``K x K`` pixel counts, rows = ground-truth class, columns = predicted class.
        images: how many images were counted (each exactly once, whatever the number of processes).
        seconds: wall-clock time of the evaluation (loading, inference and metric, on rank 0).
        published_miou: the mIoU published for the checkpoint (fraction), or None.
        protocol: how the predictions were made (resize, mode, scales, flip, dtype, batch size, processes).
        images_found: how many images of the split were found in the data folder (``images`` is fewer with
            ``limit``); None when not known.
        published_images: how many images the split has as its dataset publishes it (VOC val 1,449, ADE20K val
            2,000, Cityscapes val 500), or None: a copy with fewer is partial, and its mIoU is not the published
            protocol's.
    """

    model: str
    dataset: str
    split: str
    class_names: tuple[str, ...]
    confusion: np.ndarray = field(repr=False)
    images: int
    seconds: float
    published_miou: float | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    images_found: int | None = None
    published_images: int | None = None

    @cached_property
    def metrics(self) -> SegmentationMetrics:
        return segmentation_metrics(self.confusion)

    @property
    def iou(self) -> np.ndarray:
        """Per-class IoU (NaN for a class absent from both labels and predictions)."""
        return self.metrics.iou

    @property
    def accuracy(self) -> np.ndarray:
        """Per-class accuracy: the share of each class's labelled pixels predicted as it (NaN when never labelled)."""
        return self.metrics.accuracy

    @property
    def miou(self) -> float:
        return self.metrics.miou

    @property
    def mean_accuracy(self) -> float:
        return self.metrics.mean_accuracy

    @property
    def pixel_accuracy(self) -> float:
        return self.metrics.pixel_accuracy

    @property
    def difference(self) -> float | None:
        """``miou - published_miou`` (a fraction), or None when nothing was published for this model."""
        return None if self.published_miou is None else self.miou - self.published_miou

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def rows(self) -> list[tuple[str, str, str, str]]:
        """``(class, IoU %, accuracy %, labelled pixels)`` per class; ``-`` where a figure is undefined."""
        return [(name.split(",")[0], _percent(iou), _percent(acc), str(int(pixels)))
                for name, iou, acc, pixels in zip(self.class_names, self.iou, self.accuracy, self.metrics.labelled)]

    @property
    def partial(self) -> bool:
        """Whether fewer images were used than the split has as published (a partial copy, or ``limit``)."""
        return self.published_images is not None and self.images != self.published_images

    def summary(self) -> str:
        """``mIoU 80.12 (published 80.30, -0.18)``: the line to compare with the model table; on fewer images than
        the published split it says on how many (``; on 450 of the split's 500 images``)."""
        line = f"mIoU {_percent(self.miou)}"
        if self.published_miou is not None:
            line += f" (published {100 * self.published_miou:.2f}, {100 * self.difference:+.2f}"
            line += f"; on {self.images} of the split's {self.published_images:,} images)" if self.partial else ")"
        return line

    def image_counts(self) -> str:
        """``450 images of cityscapes val (450 found; the split has 500 as published)``: how many images were
        used, found and published, so that a partial copy shows."""
        counts = []
        if self.images_found is not None:
            counts.append(f"the first {self.images} of {self.images_found} found" if self.images != self.images_found
                          else f"{self.images_found} found")
        if self.published_images is not None:
            counts.append(f"the split has {self.published_images:,} as published")
        shown = f" ({'; '.join(counts)})" if counts else ""
        return f"{self.images} images of {self.dataset} {self.split}{shown}"

    def details(self) -> str:
        """Mean accuracy, pixel accuracy, images (used, found, published), time and protocol, on one line."""
        protocol = ", ".join(f"{key} {value}" for key, value in self.protocol.items())
        return (f"mean accuracy {_percent(self.mean_accuracy)}, pixel accuracy {_percent(self.pixel_accuracy)}; "
                f"{self.image_counts()} in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s); {protocol}")

    def __str__(self) -> str:
        header = ("class", "IoU", "Acc", "pixels")
        rows = self.rows()
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        lines = []
        for row in [header, tuple("-" * w for w in widths), *rows]:
            lines.append("  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))]))
        return "\n".join([*lines, "", f"{self.model} on {self.dataset} {self.split}: {self.details()}", self.summary()])

    def __repr__(self) -> str:
        return f"EvaluationResult({self.model} on {self.dataset} {self.split}, {self.images} images, {self.summary()})"

    def _repr_html_(self) -> str:
        """Jupyter display: the summary, then the per-class table."""
        body = "".join(f"<tr><td>{html.escape(name)}</td><td>{iou}</td><td>{acc}</td><td>{pixels}</td></tr>"
                       for name, iou, acc, pixels in self.rows())
        return (f"<p><b>{html.escape(self.model)}</b> on {html.escape(self.dataset)} {html.escape(self.split)}: "
                f"<b>{html.escape(self.summary())}</b><br>{html.escape(self.details())}</p>"
                f"<table><thead><tr><th>class</th><th>IoU</th><th>Acc</th><th>pixels</th></tr></thead>"
                f"<tbody>{body}</tbody></table>")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: figures as percentages (``null`` where undefined), the confusion matrix as lists."""
        percent = lambda value: None if math.isnan(value) else 100 * float(value)  # noqa: E731
        return {
            "model": self.model, "dataset": self.dataset, "split": self.split, "images": self.images,
            "images_found": self.images_found, "published_images": self.published_images,
            "seconds": self.seconds, "miou": percent(self.miou), "mean_accuracy": percent(self.mean_accuracy),
            "pixel_accuracy": percent(self.pixel_accuracy),
            "published_miou": None if self.published_miou is None else 100 * self.published_miou,
            "difference": None if self.difference is None else 100 * self.difference,
            "protocol": self.protocol,
            "classes": [{"name": name, "iou": percent(iou), "accuracy": percent(acc), "pixels": int(pixels)}
                        for name, iou, acc, pixels in zip(self.class_names, self.iou, self.accuracy,
                                                          self.metrics.labelled)],
            "confusion": np.asarray(self.confusion).tolist(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
