"""Load a saved model back by folder or Hub name: ``from_pretrained`` (saving and sharing are :mod:`.save`'s).

The folder layout and ``config.json`` are :mod:`.format`'s. The Hub is reached through ``huggingface_hub`` (its
cache, token, ``HF_ENDPOINT`` and offline rules apply): files are fetched one by one with ``hf_hub_download``
(``config.json`` first, so a repository that is not a resnest_zoo model is refused before its weights are
downloaded).
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from ..api import build_with_weights, finish, with_classes
from ..devices import resolve_device
from ..errors import (CheckpointMismatchError, CheckpointNotAvailableError, ConfigFormatError, IntegrityError,
                      PretrainedNotFoundError)
from ..models.segmentor import Segmentor, check_buildable, freeze_parts
from ..weights.checkpoint import read_state_dict
from ..weights.integrity import sha256_file
from ..weights.sources import HubFileMissing, SourceSettings, default_progress, hub_file
from ..weights.transfer import TransferError
from . import HUB_PREFIX
from .format import CONFIG_NAME, WEIGHTS_NAME, SavedModel, parse_record

__all__ = ["from_pretrained", "read_pretrained"]

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


# ---------------------------------------------------------------------------------------------- loading

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
) -> Segmentor:
    """A model saved with :meth:`~resnest_zoo.Segmentor.save_pretrained`, from a folder or a Hub repository.

    Args:
        name_or_path: a local folder, or a Hub repository ``org/name`` (``hf:org/name`` to mean the Hub even
            where a folder of that name exists).
        revision: the Hub branch, tag or commit (default ``main``); not for folders.
        device, auxiliary_head, optimize, num_classes, class_names, palette, freeze: as for
            :func:`resnest_zoo.load` (new classes re-initialise the classifiers of the saved model).
        cache_dir, token, local_files_only: huggingface_hub's; ``RESNEST_ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``
            also mean ``local_files_only``.

    ``model.safetensors`` must have the sha256 recorded in ``config.json`` (:class:`~resnest_zoo.IntegrityError`
    otherwise) and fit the recorded architecture strictly. A folder or repository without these files raises
    :class:`~resnest_zoo.PretrainedNotFoundError`; a ``config.json`` of another library or a newer format,
    :class:`~resnest_zoo.ForeignConfigError` / :class:`~resnest_zoo.ConfigVersionError`.
    """
    frozen = freeze_parts(freeze)
    target = resolve_device(device)
    record, weights, label = read_pretrained(name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                                             local_files_only=local_files_only)
    config, reinitialise = with_classes(record.model, num_classes=num_classes, class_names=class_names, palette=palette)
    found = sha256_file(weights)
    if found != record.weights_sha256:
        raise IntegrityError(f"{label}: {WEIGHTS_NAME} has sha256 {found}, but its {CONFIG_NAME} records "
                             f"{record.weights_sha256}: the two files do not belong together (a partial upload or "
                             "a hand-edited file). Save or download the model again.")
    if auxiliary_head and not record.auxiliary_head:
        raise CheckpointMismatchError(f"{label} was saved without its auxiliary head, so auxiliary_head=True cannot be "
                                      "loaded from it; load it with auxiliary_head=False")
    model = build_with_weights(config, read_state_dict(weights, source=f"{label}/{WEIGHTS_NAME}"),
                               source=f"{label}/{WEIGHTS_NAME}",
                               entry=record.origin.entry if record.origin is not None else None,
                               auxiliary_head=auxiliary_head, reinitialise_classifiers=reinitialise)
    model.source_sha256 = record.origin.sha256 if record.origin is not None else None
    return finish(model, device=target, freeze=frozen, optimize=optimize)


def read_pretrained(name_or_path: str | os.PathLike[str], *, revision: str | None = None,
                    cache_dir: str | os.PathLike[str] | None = None, token: str | None = None,
                    local_files_only: bool = False, settings: SourceSettings | None = None) -> tuple[SavedModel, Path, str]:
    """The checked ``config.json`` of a saved model, the local path of its weights, and a name for messages."""
    text = os.fspath(name_or_path)
    repo_id = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else None
    if repo_id is None and Path(text).expanduser().is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub repositories, but {text} is a local folder")
        folder = Path(text).expanduser()
        config, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config, weights):
            if not path.is_file():
                raise PretrainedNotFoundError(
                    f"{folder} has no {path.name}: a saved model is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, as "
                    f"save_pretrained() writes it (found: {', '.join(sorted(p.name for p in folder.iterdir())[:8]) or 'nothing'})")
        return _record(config.read_text(encoding="utf-8"), str(config)), weights, str(folder)
    repo_id = repo_id if repo_id is not None else text
    if not _REPO_ID.fullmatch(repo_id):
        raise PretrainedNotFoundError(f"{text!r} is neither a folder nor a Hugging Face Hub repository name "
                                      "(org/name): give the folder save_pretrained() wrote, or the repository")
    settings = settings if settings is not None else SourceSettings.from_env()
    settings = replace(settings, offline=settings.offline or local_files_only,
                       hf_cache_dir=os.fspath(cache_dir) if cache_dir is not None else settings.hf_cache_dir)
    label = f"Hub repository {repo_id}" + (f" (revision {revision})" if revision else "")
    fetch = dict(repo_id=repo_id, revision=revision, token=token, settings=settings, label=label)
    try:
        config = _hub_file(CONFIG_NAME, **fetch)  # first: a repository of something else stops here
    except PretrainedNotFoundError as exc:
        if text.startswith(HUB_PREFIX):
            raise
        raise PretrainedNotFoundError(f"{exc}; and there is no folder {text}") from None
    record = _record(config.read_text(encoding="utf-8"), f"{label}: {CONFIG_NAME}")
    return record, _hub_file(WEIGHTS_NAME, **fetch), label


def _record(text: str, where: str) -> SavedModel:
    """A ``config.json``'s record, checked to describe a model this package builds."""
    record = parse_record(text, where)
    try:
        check_buildable(record.model)
    except ConfigFormatError as exc:
        raise ConfigFormatError(f"{where}: {exc}") from None
    return record


def _hub_file(filename: str, *, repo_id: str, revision: str | None, token: str | None, settings: SourceSettings,
              label: str) -> Path:
    """One file of a Hub repository (:func:`~resnest_zoo.weights.sources.hub_file`), its failures as this package's
    errors: not there -> :class:`PretrainedNotFoundError`, not reachable -> :class:`CheckpointNotAvailableError`."""
    try:
        return hub_file(repo_id, filename, settings=settings, revision=revision, token=token, progress=default_progress())
    except HubFileMissing as exc:
        raise PretrainedNotFoundError(f"{label} has no {filename} ({exc.reason}): it does not exist, is private (log in "
                                      "with `hf auth login` or pass token=), or is not a model saved by resnest_zoo") from None
    except TransferError as exc:
        raise CheckpointNotAvailableError(f"could not get {filename} of {label}: {exc.reason}. Connect once to download "
                                          "it, or load a local folder.") from None
