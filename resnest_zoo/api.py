"""The entry points that put files and networks together: :func:`load`, :func:`load_model`, :func:`from_pretrained`,
:func:`build`, :func:`download` and :func:`list_models`.

Each is a short sequence of calls into the layers below -- the catalogue says what the model is, the weights layer
gets and verifies its file (:mod:`resnest_zoo.weights`), the models build the network and fill it strictly
(:mod:`resnest_zoo.models`) -- so the order of a load can be read here, in one place.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .catalogue import CheckpointEntry, catalogue, get_entry
from .config import ModelConfig, check_palette, new_classes
from .deploy.runtime import RuntimeModel, check_load_options
from .devices import resolve_device
from .errors import CheckpointMismatchError, ConfigFormatError
from .formats.saved_model import WEIGHTS_NAME, SavedModel
from .models.optimize import optimize_for_inference
from .models.segmentor import Segmentor, build_segmentor, freeze_parts
from .models.strict import check_buildable, fits, load_into
from .naming import ModelName, parse_model_name
from .weights.checkpoint import read_state_dict
from .weights.saved import read_saved
from .weights.sources import checkpoint_state_dict, download_entry

__all__ = ["load", "load_model", "from_pretrained", "build", "download", "list_models"]


def build(segmentor: str, dataset: str, *, auxiliary_head: bool = False,
          device: str | torch.device | None = None) -> Segmentor:
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
        progress: show download progress (default: a bar on a terminal or in a notebook; lines in a log).
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

    Bad classes raise :class:`~resnest_zoo.InvalidClassesError`, before anything is downloaded. The model records
    the sha256 of the file its weights came from in ``model.source_sha256`` (None for a local file given without
    ``sha256=``), which exports and saved models carry on.
    """
    entry = get_entry(segmentor, dataset)
    config, reinitialise = with_classes(entry.config, num_classes=num_classes, class_names=class_names, palette=palette)
    frozen = freeze_parts(freeze)
    if backend != "torch" or runtime_file is not None:
        check_load_options(backend, runtime_file=runtime_file, device=device, weights=weights, freeze=frozen,
                           auxiliary_head=auxiliary_head)
        if runtime_file is not None:  # the file holds the network: nothing to download
            return RuntimeModel.from_file(runtime_file, backend, config=config, entry=entry, source_sha256=sha256)
        device = "cpu"
    target = resolve_device(device)  # before any download: DeviceNotAvailableError for a device this machine lacks
    state_dict, source, digest = checkpoint_state_dict(entry, check=fits(entry), weights=weights, sha256=sha256,
                                                       cache_dir=cache_dir, progress=progress)
    model = build_with_weights(config, state_dict, source=source, entry=entry, auxiliary_head=auxiliary_head,
                               reinitialise_classifiers=reinitialise)
    del state_dict
    model.source_sha256 = digest
    model = finish(model, device=target, freeze=frozen, optimize=optimize)
    return model if backend == "torch" else RuntimeModel.from_segmentor(model, backend)


def from_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    auxiliary_head: bool = False,
    optimize: bool = False,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    freeze: str | Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    local_files_only: bool = False,
    progress: bool | None = None,
) -> Segmentor:
    """A model saved with :meth:`~resnest_zoo.Segmentor.save_pretrained`, from a folder or a Hub repository.

    Args:
        name_or_path: a local folder, or a Hub repository ``org/name`` (``hf:org/name`` to mean the Hub even
            where a folder of that name exists).
        revision: the Hub branch, tag or commit (default ``main``); not for folders.
        device, auxiliary_head, optimize, num_classes, class_names, palette, freeze, progress: as for
            :func:`load` (new classes re-initialise the classifiers of the saved model).
        cache_dir, token, local_files_only: huggingface_hub's; ``RESNEST_ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``
            also mean ``local_files_only``.

    ``model.safetensors`` must have the sha256 recorded in ``config.json`` (:class:`~resnest_zoo.IntegrityError`
    otherwise) and fit the recorded architecture strictly. A folder or repository without these files raises
    :class:`~resnest_zoo.PretrainedNotFoundError`; a ``config.json`` of another library or a newer format,
    :class:`~resnest_zoo.ForeignConfigError` / :class:`~resnest_zoo.ConfigVersionError`.
    """
    frozen = freeze_parts(freeze)
    target = resolve_device(device)
    saved = read_saved(name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                       local_files_only=local_files_only, progress=progress, check=_buildable)
    record = saved.record
    config, reinitialise = with_classes(record.model, num_classes=num_classes, class_names=class_names, palette=palette)
    if auxiliary_head and not record.auxiliary_head:
        raise CheckpointMismatchError(f"{saved.label} was saved without its auxiliary head, so auxiliary_head=True "
                                      "cannot be loaded from it; load it with auxiliary_head=False")
    source = f"{saved.label}/{WEIGHTS_NAME}"
    model = build_with_weights(config, read_state_dict(saved.weights, source=source), source=source,
                               entry=record.origin.entry if record.origin is not None else None,
                               auxiliary_head=auxiliary_head, reinitialise_classifiers=reinitialise)
    model.source_sha256 = record.origin.sha256 if record.origin is not None else None
    return finish(model, device=target, freeze=frozen, optimize=optimize)


def _buildable(record: SavedModel, where: str) -> None:
    """A saved model's ``config.json`` must describe a model built here (checked before its weights are fetched)."""
    try:
        check_buildable(record.model)
    except ConfigFormatError as exc:
        raise ConfigFormatError(f"{where}: {exc}") from None


def load_model(name: str | os.PathLike[str] | ModelName, **options: Any) -> Segmentor | RuntimeModel:
    """The model a model name names (:mod:`resnest_zoo.naming`): ``"deeplabv3plus/cityscapes"`` is
    :func:`load`, a saved model's folder or ``"hf:org/name"`` is :func:`from_pretrained`.

    ``options`` are :func:`load`'s. A saved model carries its weights, so ``weights``, ``sha256``, ``cache_dir``
    and ``runtime_file`` are refused for one; ``backend`` runs it in ONNX Runtime or OpenVINO (exported in memory).
    """
    parsed = parse_model_name(name)
    if parsed.saved is None:
        return load(parsed.segmentor, parsed.dataset, **options)  # type: ignore[arg-type]
    unusable = [key for key in ("weights", "sha256", "cache_dir", "runtime_file") if options.get(key) is not None]
    if unusable:
        raise ValueError(f"{', '.join(unusable)} apply to catalogue checkpoints (SEGMENTOR/DATASET), not to the saved "
                         f"model {parsed.saved}, which carries its weights (a Hub model lives in the Hugging Face "
                         "cache)")
    backend = options.pop("backend", "torch")
    for key in ("weights", "sha256", "cache_dir", "runtime_file"):
        options.pop(key, None)
    if backend != "torch":
        check_load_options(backend, runtime_file=None, device=options.get("device"), weights=None,
                           freeze=freeze_parts(options.get("freeze")), auxiliary_head=options.get("auxiliary_head", False))
        options["device"] = "cpu"
    model = from_pretrained(parsed.saved, **options)
    return model if backend == "torch" else RuntimeModel.from_segmentor(model, backend)


def download(
    segmentor: str,
    dataset: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    sha256: str | None = None,
    force: bool = False,
) -> Path:
    """The local path of a catalogue checkpoint, downloaded and verified if needed.

    Args:
        segmentor, dataset: the catalogue entry (``"deeplabv3plus", "cityscapes"``; aliases work).
        cache_dir: cache folder (default ``$RESNEST_ZOO_CACHE``, else ``torch.hub.get_dir()/checkpoints``).
        progress: show progress (default: a bar on a terminal or in a notebook; lines in a log).
        sha256: digest the file must have, checked in addition to the catalogue's pin.
        force: fetch the file again even if a verified copy is cached (it replaces the copy once verified).

    Raises:
        CheckpointNotAvailableError: no source supplied a verified file; the message lists each source tried
            with the reason and says how to supply the file by hand.
        CheckpointFormatError, UnsafeCheckpointError, CheckpointMismatchError: a source supplied a file that
            is not a safe checkpoint of this entry; it was removed, and the message says what.
    """
    entry = get_entry(segmentor, dataset)
    return download_entry(entry, check=fits(entry), cache_dir=cache_dir, progress=progress, sha256=sha256,
                          force=force).path


def list_models() -> list[dict[str, Any]]:
    """The catalogue: one dict per published checkpoint (segmentor, dataset, classes, mIoU, URL, digest ...)."""
    return [entry.to_dict() for entry in catalogue().values()]


# ------------------------------------------------------------------------------------------ the steps of a load

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
