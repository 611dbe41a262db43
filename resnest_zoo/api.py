"""The one-line entry points: :func:`load`, :func:`build` and :func:`list_models`."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from .catalogue import CheckpointEntry, catalogue, get_entry
from .config import ModelConfig, check_palette, new_classes
from .devices import resolve_device
from .weights.checkpoint import load_into
from .weights.integrity import normalise_sha256
from .models.optimize import optimize_for_inference
from .models.segmentor import Segmentor, build_segmentor, freeze_parts
from .weights.sources import checkpoint_state_dict, expected_digest

if TYPE_CHECKING:
    from .inference.backends import RuntimeModel

__all__ = ["load", "build", "list_models"]


def build(segmentor: str, dataset: str, *, auxiliary_head: bool = False, device: str | torch.device | None = None) -> Segmentor:
    """The architecture of a catalogue entry with random weights, in eval mode.

    ``auxiliary_head=True`` also builds the stage-3 auxiliary head the published files carry (for fine-tuning).
    """
    target = resolve_device(device) if device is not None else None  # before building: a bad device costs nothing
    model = build_segmentor(get_entry(segmentor, dataset), auxiliary_head=auxiliary_head)
    return model.to(target) if target is not None else model


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
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    freeze: str | Sequence[str] | None = None,
    backend: str = "torch",
    runtime_file: str | os.PathLike[str] | None = None,
) -> Segmentor | RuntimeModel:
    """A pretrained segmentor, ready for inference (eval mode, on ``device``) -- or, with new classes, to fine-tune.

    Args:
        segmentor: ``fcn``, ``pspnet``, ``deeplabv3`` or ``deeplabv3plus`` (case-insensitive; aliases such as
            ``deeplabv3+`` work).
        dataset: ``voc``, ``ade20k`` or ``cityscapes`` (aliases ``pascal_voc``, ``ade`` ...).
        weights: ``None`` for the catalogue's checkpoint (downloaded, verified and cached on first use),
            or a local file path or an http(s) URL.
        device: where to put the model; default CUDA when available, else CPU. A device this machine lacks
            (``"cuda"`` without a GPU) raises :class:`~resnest_zoo.DeviceNotAvailableError` before any download.
        sha256: expected digest of the checkpoint file, checked in addition to the catalogue's pin.
        cache_dir: where downloaded checkpoints live (default ``$RESNEST_ZOO_CACHE`` or torch.hub's folder).
        progress: show a download progress bar (default: when attached to a terminal or notebook).
        auxiliary_head: also build and load the auxiliary training head.
        optimize: fold every BatchNorm into the convolution before it (:func:`~resnest_zoo.optimize_for_inference`):
            the same predictions, faster; but ``state_dict()`` then no longer has the published layout, so leave
            it off to fine-tune or re-save the model.
        num_classes, class_names: new classes (either or both): the final classifier -- and the auxiliary head's,
            when kept -- is freshly initialised for them; every other tensor is loaded as strictly as ever.
            ``class_names`` defaults to ``class_0``, ``class_1`` ...
        palette: colours of the classes, ``(classes, 3)`` integers 0-255; default a generated palette for new
            classes, the dataset's otherwise (a palette alone recolours the published classes).
        freeze: for fine-tuning, ``"backbone"`` (its weights and BatchNorm statistics stay as loaded),
            ``"batchnorm"`` (every BatchNorm keeps its statistics), or both in a list; see :meth:`Segmentor.freeze`.
        backend: ``"torch"`` (the segmentor), or ``"onnxruntime"`` / ``"openvino"``: a
            :class:`~resnest_zoo.RuntimeModel` whose network runs in that runtime on the CPU (the checkpoint
            exported in memory, BatchNorm folded), with the same ``predict``.
        runtime_file: with a runtime backend, a file from :func:`~resnest_zoo.export_onnx` /
            :func:`~resnest_zoo.export_openvino` to run instead: nothing is downloaded; it must hold this model
            (:class:`~resnest_zoo.RuntimeModelMismatchError` otherwise, and for a ``sha256`` other than its source's)
            and be one of ours (:class:`~resnest_zoo.RuntimeFileError`).

    Bad classes raise :class:`~resnest_zoo.InvalidClassesError`, before anything is downloaded.
    """
    entry = get_entry(segmentor, dataset)
    config, reinitialise = with_classes(entry.config, num_classes=num_classes, class_names=class_names, palette=palette)
    frozen = freeze_parts(freeze)
    if backend != "torch" or runtime_file is not None:
        from .inference.backends import RuntimeModel, check_load_options  # the runtimes load only when asked for

        check_load_options(backend, runtime_file=runtime_file, device=device, weights=weights, freeze=frozen,
                           auxiliary_head=auxiliary_head)
        if runtime_file is not None:  # the file holds the network: nothing to download
            return RuntimeModel.from_file(runtime_file, backend, config=config, entry=entry, source_sha256=sha256)
        device = "cpu"
    target = resolve_device(device)  # before any download: DeviceNotAvailableError for a device this machine lacks
    state_dict, source = checkpoint_state_dict(entry, weights=weights, sha256=sha256, cache_dir=cache_dir, progress=progress)
    model = build_with_weights(config, state_dict, source=source, entry=entry, auxiliary_head=auxiliary_head,
                               reinitialise_classifiers=reinitialise)
    del state_dict
    if weights is None:  # the file read was verified against this digest: the pin, the publisher's or its record
        model.source_sha256 = expected_digest(entry, sha256=sha256, cache_dir=cache_dir)
    elif sha256 is not None:  # a file of one's own: its digest is known when it was checked
        model.source_sha256 = normalise_sha256(sha256)
    model = finish(model, device=target, freeze=frozen, optimize=optimize)
    return model if backend == "torch" else RuntimeModel.from_segmentor(model, backend)


def with_classes(config: ModelConfig, *, num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None) -> tuple[ModelConfig, bool]:
    """``config`` with the classes asked for (see :func:`load`), and whether they are new (the classifiers then
    need fresh weights). Raises :class:`~resnest_zoo.InvalidClassesError`."""
    if num_classes is None and class_names is None:
        return (config if palette is None else replace(config, palette=check_palette(palette, config.num_classes))), False
    return config.with_classes(*new_classes(num_classes, class_names, palette)), True


def build_with_weights(config: ModelConfig, state_dict: Mapping[str, torch.Tensor], *, source: str,
                       entry: CheckpointEntry | None, auxiliary_head: bool = False,
                       reinitialise_classifiers: bool = False) -> Segmentor:
    """The model ``config`` describes holding ``state_dict``'s tensors, loaded strictly (eval mode, on the CPU).

    Built on the meta device, so no time goes into a random initialisation that the weights replace at once;
    with ``reinitialise_classifiers`` the classifiers alone are initialised instead of loaded. ``entry`` is the
    catalogue checkpoint the weights come from (named in mismatch errors, recorded when the model is saved).
    """
    with torch.device("meta"):
        model = build_segmentor(config, auxiliary_head=auxiliary_head)
    model.entry = entry
    reinitialised = model.classifier_keys() if reinitialise_classifiers else ()
    load_into(model, state_dict, source=source, assign=True, reinitialised=reinitialised)
    if reinitialise_classifiers:
        model.reset_classifiers()
    left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:  # every tensor is persistent today; this guards against a future non-persistent buffer
        raise RuntimeError(f"tensors not filled by the checkpoint: {', '.join(left_on_meta[:5])}")
    return model


def finish(model: Segmentor, *, device: torch.device, freeze: tuple[str, ...] = (), optimize: bool = False) -> Segmentor:
    """The last steps of loading: move to ``device``, eval mode, then freeze (for training) or fold (for inference)."""
    if optimize and freeze:
        raise ValueError("optimize=True folds BatchNorm for inference, freeze= prepares training: choose one")
    model = model.to(device).eval().freeze(*freeze)
    return optimize_for_inference(model) if optimize else model


def list_models() -> list[dict[str, Any]]:
    """The catalogue: one dict per published checkpoint (segmentor, dataset, classes, mIoU, URL, digest ...)."""
    return [entry.to_dict() for entry in catalogue().values()]
