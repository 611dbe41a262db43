"""The cache folder: where each file lives, listing what is cached, clearing it, and the per-file lock.

Layout of the cache folder (``cache_dir=``, else ``$RESNEST_ZOO_CACHE``, else ``torch.hub.get_dir()/checkpoints``,
the folder ``torch.hub.load_state_dict_from_url`` uses, so a file it downloaded is found and verified)::

    fcn_resnest101os8_voc_train.pth                  the published file, verified
    fcn_resnest101os8_voc_train.pth.sha256           digest record (entries not yet pinned; sha256sum format)
    fcn_resnest101os8_voc_train.pth.incomplete       a download in progress or interrupted (resumed later)
    fcn_resnest101os8_voc_train.pth.incomplete.json  where the partial file came from (URL, ETag) for resuming
    fcn_resnest101os8_voc_train.safetensors          model-only copy for fast reloads (source digest inside)
    .locks/fcn_resnest101os8_voc_train.pth.lock      cross-process lock (never deleted: others may wait on it)
    resnest_zoo-urls/<hash>/<name>                   files downloaded from explicit ``weights=`` URLs

Files that came through the Hugging Face Hub stay in Hugging Face's own cache (manage them with ``hf cache``).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock

from .. import environment
from ..catalogue import CheckpointEntry, catalogue, get_entry
from .integrity import RECORD_SUFFIX, record_path

__all__ = [
    "CachedFile",
    "resolve_cache_dir",
    "checkpoint_path",
    "partial_path",
    "partial_meta_path",
    "safetensors_path",
    "url_download_path",
    "file_lock",
    "cached_files",
    "clear_cache",
]

PARTIAL_SUFFIX = ".incomplete"
PARTIAL_META_SUFFIX = ".incomplete.json"
URL_FOLDER = "resnest_zoo-urls"
LOCK_FOLDER = ".locks"

Kind = Literal["checkpoint", "safetensors", "partial"]


@dataclass(frozen=True)
class CachedFile:
    """One file in the cache: its path, size in bytes, kind, and catalogue entry (None for ``weights=`` URLs)."""

    path: Path
    size: int
    kind: Kind
    entry: CheckpointEntry | None


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$RESNEST_ZOO_CACHE``, else torch.hub's checkpoints folder.

    The folder is not created here; downloading creates it.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = environment.text(environment.CACHE)
    if from_env:
        return Path(from_env).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()).expanduser() / "checkpoints"


def checkpoint_path(folder: Path, entry: CheckpointEntry) -> Path:
    """Where the published file of ``entry`` lives in the cache folder (its published file name)."""
    return folder / entry.filename


def partial_path(path: Path) -> Path:
    """The temporary name ``path`` is downloaded under until it is complete and verified."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def partial_meta_path(path: Path) -> Path:
    """The JSON note (URL, ETag, size) that lets a partial download of ``path`` be resumed safely."""
    return path.with_name(path.name + PARTIAL_META_SUFFIX)


def safetensors_path(folder: Path, entry: CheckpointEntry) -> Path:
    """The model-only fast-reload copy of ``entry`` in the cache folder."""
    return folder / (Path(entry.filename).stem + ".safetensors")


def url_download_path(folder: Path, url: str) -> Path:
    """Where a file downloaded from an explicit ``weights=`` URL is cached (one folder per URL, so files
    with the same name from different places never collide with each other or with catalogue files)."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "checkpoint.pth"
    return folder / URL_FOLDER / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16] / name


def file_lock(path: Path) -> FileLock:
    """The cross-process lock guarding downloads and deletions of ``path`` (in ``.locks/`` beside it)."""
    lock = path.parent / LOCK_FOLDER / (path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock))


def _record(path: Path, kind: Kind, entry: CheckpointEntry | None) -> CachedFile | None:
    try:
        return CachedFile(path=path, size=path.stat().st_size, kind=kind, entry=entry)
    except FileNotFoundError:  # removed meanwhile by another process
        return None


def _entry_files(folder: Path, entry: CheckpointEntry) -> Iterator[CachedFile]:
    checkpoint = checkpoint_path(folder, entry)
    for path, kind in ((checkpoint, "checkpoint"), (safetensors_path(folder, entry), "safetensors"),
                       (partial_path(checkpoint), "partial")):
        record = _record(path, kind, entry)  # type: ignore[arg-type]
        if record is not None:
            yield record


def _url_files(folder: Path) -> Iterator[CachedFile]:
    root = folder / URL_FOLDER
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/*")):
        name = path.name
        if not path.is_file() or name.endswith((RECORD_SUFFIX, PARTIAL_META_SUFFIX)) or ".tmp" in path.suffixes:
            continue
        kind: Kind = "partial" if name.endswith(PARTIAL_SUFFIX) else "checkpoint"
        record = _record(path, kind, None)
        if record is not None:
            yield record


def cached_files(cache_dir: str | os.PathLike[str] | None = None) -> list[CachedFile]:
    """The resnest_zoo files in the cache folder: published checkpoints, fast-reload safetensors copies and
    partial downloads, each with its size and catalogue entry. Digest records and locks are not listed."""
    folder = resolve_cache_dir(cache_dir)
    if not folder.is_dir():
        return []
    files = [record for entry in catalogue().values() for record in _entry_files(folder, entry)]
    return files + list(_url_files(folder))


def _remove(path: Path, removed: list[Path]) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    removed.append(path)


def _clear_entry(folder: Path, entry: CheckpointEntry, removed: list[Path]) -> None:
    checkpoint = checkpoint_path(folder, entry)
    with file_lock(checkpoint):  # never delete a file another process is downloading or verifying
        for path in (checkpoint, record_path(checkpoint), partial_path(checkpoint), partial_meta_path(checkpoint),
                     safetensors_path(folder, entry)):
            _remove(path, removed)


def clear_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    segmentor: str | None = None,
    dataset: str | None = None,
) -> list[Path]:
    """Delete cached resnest_zoo files and return the removed paths.

    With ``segmentor`` and ``dataset``: that entry's checkpoint, digest record, partial download and
    safetensors copy. With neither: those of every entry, and all files downloaded from ``weights=`` URLs.
    Waits for a download of the same file in another process to finish first. Other files in the folder
    (other libraries share torch.hub's folder) and the Hugging Face cache are left alone.
    """
    if (segmentor is None) != (dataset is None):
        raise ValueError(
            f"clear_cache takes both segmentor and dataset, or neither (everything); got segmentor={segmentor!r}, "
            f"dataset={dataset!r}"
        )
    folder = resolve_cache_dir(cache_dir)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    if segmentor is not None and dataset is not None:
        _clear_entry(folder, get_entry(segmentor, dataset), removed)
        return removed
    for entry in catalogue().values():
        _clear_entry(folder, entry, removed)
    root = folder / URL_FOLDER
    if root.is_dir():
        for path in sorted(p for p in root.glob("*/*") if p.is_file()):
            base = path.with_name(_base_name(path.name))
            with file_lock(base):
                _remove(path, removed)
    return removed


def _base_name(name: str) -> str:
    for suffix in (PARTIAL_META_SUFFIX, PARTIAL_SUFFIX, RECORD_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
