"""The training loss of the published checkpoints: :func:`segmentation_loss`."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ClassIdError
from ..models.segmentor import TrainingOutput
from .recipe import AUXILIARY_LOSS_WEIGHT, IGNORE_INDEX

__all__ = ["segmentation_loss"]


def segmentation_loss(
    output: TrainingOutput | torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    auxiliary_weight: float = AUXILIARY_LOSS_WEIGHT,
) -> torch.Tensor:
    """The reference's training loss: pixel-wise cross-entropy of the main logits, plus ``auxiliary_weight`` (0.4,
    as in the published configs) times that of the auxiliary logits when the model has its auxiliary head.

    Args:
        output: what the model returns in training mode (:class:`~resnest_zoo.TrainingOutput`), or a logits
            tensor ``(N, K, H, W)``.
        target: class ids ``(N, H, W)`` (any integer dtype) at the logits' size; ``ignore_index`` (255) marks
            pixels that count in no loss.
        ignore_index, auxiliary_weight: the published values by default (:mod:`resnest_zoo.training.recipe`).

    Returns:
        A scalar: each cross-entropy is the mean over the pixels not ignored, as the reference computes it
        (``NaN`` when every pixel of the batch is ignored, as there).

    Raises:
        ClassIdError: ``target`` holds a class id the logits have no channel for (``K`` or more, or negative) other
            than ``ignore_index``.
    """
    logits, auxiliary = (output.logits, output.auxiliary_logits) if isinstance(output, TrainingOutput) else (output, None)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        raise TypeError(f"output must be the model's TrainingOutput or an (N, K, H, W) logits tensor, got {_shape(output)}")
    if target.ndim != 3 or target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(f"target must be (N, H, W) = {(logits.shape[0], *logits.shape[2:])} class ids for logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    target = target.long()
    _check_class_ids(target, logits.shape[1], ignore_index)
    loss = F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    if auxiliary is not None:
        loss = loss + auxiliary_weight * F.cross_entropy(auxiliary.float(), target, ignore_index=ignore_index)
    return loss


def _shape(value: object) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def _check_class_ids(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """:class:`ClassIdError` unless every value of ``target`` is a class id ``0..num_classes-1`` or ``ignore_index``
    (cross-entropy would fail with an IndexError on the CPU, and a device-side assert on a GPU)."""
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        values = torch.unique(target[bad]).tolist()
        shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
        raise ClassIdError(f"target holds class id(s) {shown}, but the model predicts {num_classes} classes (ids "
                           f"0-{num_classes - 1}, and {ignore_index} for pixels to ignore); remap the masks to those "
                           f"ids, or give the model as many classes as the masks have (num_classes=)")
