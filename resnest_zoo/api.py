"""The one-line entry points: :func:`load`, :func:`build` and :func:`list_models`."""
from __future__ import annotations

import os
from typing import Any

import torch

from .catalogue import catalogue, get_entry
from .devices import default_device
from .weights.checkpoint import load_into
from .models.optimize import optimize_for_inference
from .models.segmentor import Segmentor, build_segmentor
from .weights.sources import checkpoint_state_dict

__all__ = ["load", "build", "list_models"]


def build(segmentor: str, dataset: str, *, auxiliary_head: bool = False, device: str | torch.device | None = None) -> Segmentor:
    """The architecture of a catalogue entry with random weights, in eval mode.

    ``auxiliary_head=True`` also builds the stage-3 auxiliary head the published files carry (for fine-tuning).
    """
    model = build_segmentor(get_entry(segmentor, dataset), auxiliary_head=auxiliary_head)
    return model.to(device) if device is not None else model


def load(
    segmentor: str,
    dataset: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    auxiliary_head: bool = False,
    optimize: bool = False,
) -> Segmentor:
    """A pretrained segmentor, ready for inference (eval mode, on ``device``).

    Args:
        segmentor: ``fcn``, ``pspnet``, ``deeplabv3`` or ``deeplabv3plus`` (case-insensitive; aliases such as
            ``deeplabv3+`` work).
        dataset: ``voc``, ``ade20k`` or ``cityscapes`` (aliases ``pascal_voc``, ``ade`` ...).
        weights: ``None`` for the catalogue's checkpoint (downloaded, verified and cached on first use),
            or a local file path or an http(s) URL.
        device: where to put the model; default CUDA when available, else CPU.
        sha256: expected digest of the checkpoint file, checked in addition to the catalogue's pin.
        cache_dir: where downloaded checkpoints live (default ``$RESNEST_ZOO_CACHE`` or torch.hub's folder).
        progress: show a download progress bar (default: when attached to a terminal or notebook).
        auxiliary_head: also build and load the auxiliary training head.
        optimize: fold every BatchNorm into the convolution before it (:func:`~resnest_zoo.optimize_for_inference`):
            the same predictions, faster; but ``state_dict()`` then no longer has the published layout, so leave
            it off to fine-tune or re-save the model.
    """
    entry = get_entry(segmentor, dataset)
    state_dict, source = checkpoint_state_dict(entry, weights=weights, sha256=sha256, cache_dir=cache_dir, progress=progress)
    # Built on the meta device: no time spent on a random initialisation that the weights replace at once.
    with torch.device("meta"):
        model = build_segmentor(entry, auxiliary_head=auxiliary_head)
    load_into(model, state_dict, source=source, assign=True)
    del state_dict
    left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:  # every tensor is persistent today; this guards against a future non-persistent buffer
        raise RuntimeError(f"tensors not filled by the checkpoint: {', '.join(left_on_meta[:5])}")
    model = model.to(device if device is not None else default_device()).eval()
    return optimize_for_inference(model) if optimize else model


def list_models() -> list[dict[str, Any]]:
    """The catalogue: one dict per published checkpoint (segmentor, dataset, classes, mIoU, URL, digest ...)."""
    return [entry.to_dict() for entry in catalogue().values()]
