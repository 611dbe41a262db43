"""The reference's segmentation metric, accumulated as one confusion matrix.

sssegmentation (``ssseg/modules/datasets/pipelines/evaluation.py``) sums, over the whole set, each class's
intersection, union, predicted area and labelled area, and derives per-class IoU (intersection / union) and
accuracy (intersection / labelled area), their NaN-means over classes, and the overall pixel accuracy. Those four
areas are the diagonal, row sums and column sums of the ``K x K`` confusion matrix of (label, prediction) pairs
over the pixels that are not ignored, so :class:`ConfusionMatrix` keeps only that: ``int64`` counts on the
model's device, one ``torch.bincount`` per image, constant memory however many images, and one sum across
processes. :func:`segmentation_metrics` then computes the reference's figures from it in float64.

It sits low in the package (beside :mod:`resnest_zoo.distributed`), so that ``resnest_zoo.evaluate`` and the INT8
accuracy control (:mod:`resnest_zoo.deploy.int8`) measure with the same code.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .datasets.annotations import IGNORE
from .distributed import all_reduce_sum

__all__ = ["ConfusionMatrix", "SegmentationMetrics", "segmentation_metrics"]


class ConfusionMatrix:
    """``counts[label, prediction]`` over the pixels whose label is not ``ignore_index``, on ``device``."""

    def __init__(self, num_classes: int, device: str | torch.device = "cpu", ignore_index: int = IGNORE) -> None:
        if not 0 < num_classes <= ignore_index:
            raise ValueError(f"num_classes must be between 1 and the ignore index {ignore_index}, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """Count one image: ``prediction`` class ids and ``label`` ground truth (same shape, integers)."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in shape")
        k = self.num_classes
        label = label.to(self.counts.device, non_blocking=True).reshape(-1).long()
        prediction = prediction.to(self.counts.device, non_blocking=True).reshape(-1).long()
        # ignored pixels go to one extra bin, dropped: no boolean indexing, so no device-to-host sync for its size
        pairs = torch.where(label != self.ignore_index, label * k + prediction, k * k)
        self.counts += torch.bincount(pairs, minlength=k * k + 1)[: k * k].view(k, k)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts of every process of the run (one collective); no-op in a run of one process."""
        all_reduce_sum(self.counts)
        return self

    def numpy(self) -> np.ndarray:
        return self.counts.cpu().numpy()

    def metrics(self) -> SegmentationMetrics:
        return segmentation_metrics(self.numpy())


@dataclass(frozen=True)
class SegmentationMetrics:
    """The reference's figures, as fractions (0-1); per-class values are NaN for a class absent from both the
    labels and the predictions (IoU) or from the labels (accuracy), and the means skip NaN."""

    iou: np.ndarray
    accuracy: np.ndarray
    miou: float
    mean_accuracy: float
    pixel_accuracy: float
    labelled: np.ndarray
    predicted: np.ndarray


def segmentation_metrics(confusion: np.ndarray) -> SegmentationMetrics:
    """Per-class IoU and accuracy, mIoU, mean accuracy and pixel accuracy of a ``K x K`` confusion matrix
    (rows: labels, columns: predictions), with the reference's definitions and float64 arithmetic."""
    counts = np.asarray(confusion, dtype=np.float64)
    intersection = np.diag(counts)
    labelled = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    union = labelled + predicted - intersection
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN: NaN, as in the reference
        iou = intersection / union
        accuracy = intersection / labelled
        return SegmentationMetrics(
            iou=iou,
            accuracy=accuracy,
            miou=float(np.nanmean(iou)),
            mean_accuracy=float(np.nanmean(accuracy)),
            pixel_accuracy=float(intersection.sum() / labelled.sum()),
            labelled=labelled.astype(np.int64),
            predicted=predicted.astype(np.int64),
        )
