"""The cache folder: the one module that knows its file names; liveness of temporary files, the lock, listing.

Layout (``cache_dir=``, else ``$RESNEST_ZOO_CACHE``, else torch.hub's ``checkpoints`` folder, so that a file
``torch.hub.load_state_dict_from_url`` downloaded is found and verified)::

    fcn_resnest101os8_voc_train.pth                     the published file, verified
    fcn_resnest101os8_voc_train.pth.sha256              its digest record, written once it passed every check
    fcn_resnest101os8_voc_train.pth.release.json        the publisher's size and digest (GitHub release API)
    fcn_resnest101os8_voc_train.safetensors             model-only copy for fast reloads (its source's digest inside)
    fcn_resnest101os8_voc_train.pth.<token>.incomplete  one download attempt's bytes (and ``.json``: their origin)
    .<any file above>.<token>.partial                   being written (:func:`resnest_zoo.files.atomic_write`)
    .locks/fcn_resnest101os8_voc_train.pth.lock         the cross-process lock (kept: others may wait on it)
    resnest_zoo-urls/<hash>/<name>                      files from explicit ``weights=`` URLs, named the same way

Temporary files carry a random token: every attempt writes files of its own. A live process owns one only if it was
modified within :data:`STALE_SECONDS` (:func:`in_use`: writing refreshes it; a writer that stops dates it back).
Correctness does not rest on that judgement, nor on the lock (:func:`lock`), which only saves downloading a file twice
at once: see :mod:`.transfer` and :mod:`.obtain`.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock

from .. import environment
from ..catalogue import CheckpointEntry, catalogue, get_entry
from ..errors import ConfigurationError
from ..files import temporary_owner

__all__ = ["CachedFile", "STALE_SECONDS", "resolve_cache_dir", "safetensors_path", "record_path",
           "release_note_path", "url_download_path", "partial_path", "note_path", "partials", "in_use", "lock",
           "remove", "cached_files", "clear_cache"]

STALE_SECONDS = 60.0
"""A temporary file not modified for this long has no live owner."""
_PARTIAL = re.compile(r"(?P<name>.+)\.[0-9a-f]{12}\.incomplete(?P<note>\.json)?")
_UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_lock_free_warned = False


@dataclass(frozen=True)
class CachedFile:
    """One file in the cache: path, size, kind, catalogue entry (None: a ``weights=`` URL's), whether a live process
    may still write it."""

    path: Path
    size: int
    kind: Literal["checkpoint", "safetensors", "partial", "temporary"]
    entry: CheckpointEntry | None
    in_use: bool = False


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$RESNEST_ZOO_CACHE``, else torch.hub's checkpoints folder. It is not
    created here; a path that is (or lies under) a file raises :class:`~resnest_zoo.ConfigurationError`."""
    from_env = environment.text(environment.CACHE)
    if cache_dir is not None or from_env:
        folder = Path(cache_dir if cache_dir is not None else from_env).expanduser()  # type: ignore[arg-type]
    else:
        import torch.hub

        folder = Path(torch.hub.get_dir()).expanduser() / "checkpoints"
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigurationError(f"cannot use {folder} as the cache folder: {existing} is a file, not a folder; give "
                                 f"a folder (--cache-dir, {environment.CACHE.name} or cache_dir=)")
    return folder


def safetensors_path(folder: Path, entry: CheckpointEntry) -> Path:
    """The model-only fast-reload copy of ``entry`` in the cache folder."""
    return folder / (Path(entry.filename).stem + ".safetensors")


def record_path(path: Path) -> Path:
    """The digest record of ``path`` (``sha256sum`` format), written once the file passed every check."""
    return path.with_name(path.name + ".sha256")


def release_note_path(path: Path) -> Path:
    """What the publisher said about ``path`` (size and digest from the GitHub release API), kept beside it."""
    return path.with_name(path.name + ".release.json")


def url_download_path(folder: Path, url: str) -> Path:
    """Where a file from an explicit ``weights=`` URL is cached: a folder per URL, so that names never collide."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "checkpoint.pth"
    return folder / "resnest_zoo-urls" / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16] / name


def partial_path(target: Path) -> Path:
    """A new name for a partial download of ``target``: ``<name>.<random token>.incomplete``."""
    return target.with_name(f"{target.name}.{secrets.token_hex(6)}.incomplete")


def note_path(partial: Path) -> Path:
    """The note (URL, validator, size) that says where the bytes of a partial download came from."""
    return partial.with_name(partial.name + ".json")


def partials(target: Path) -> list[Path]:
    """The partial downloads of ``target`` left by any attempt, largest first."""
    found = [(_size(p), p) for p in target.parent.glob("*.incomplete") if _final(p.name) == (target.name, True)]
    return [path for size, path in sorted(found, reverse=True) if size is not None]


def in_use(path: Path) -> bool:
    """Whether a live process may still write ``path`` (a note: its partial download): modified within
    :data:`STALE_SECONDS`."""
    note = _PARTIAL.fullmatch(path.name)
    try:
        return time.time() - (path.with_suffix("") if note and note["note"] else path).stat().st_mtime < STALE_SECONDS
    except FileNotFoundError:
        return False


def remove(paths: Iterable[Path]) -> list[Path]:
    """Delete the files that exist among ``paths``; return those deleted."""
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


@contextmanager
def lock(path: Path) -> Iterator[None]:
    """Hold the cross-process lock of ``path``, waiting while another process holds it; raise :class:`OSError` when
    the folder cannot be written. Where files cannot be locked, go on without (one warning per process)."""
    global _lock_free_warned
    (path.parent / ".locks").mkdir(parents=True, exist_ok=True)
    held, locked = FileLock(str(path.parent / ".locks" / (path.name + ".lock"))), True
    try:
        held.acquire()
    except (NotImplementedError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in _UNWRITABLE:
            raise
        locked = False
        if not _lock_free_warned:
            _lock_free_warned = True
            warnings.warn(f"cannot lock files in {path.parent} ({type(exc).__name__}: {exc}); working without locks. "
                          "Downloads stay verified and each process writes files of its own, but processes starting "
                          "together may each download the same file.", RuntimeWarning, stacklevel=3)
    try:
        yield
    finally:
        if locked:
            held.release()


# ----------------------------------------------------------------------------------------- list, clear

def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # removed meanwhile by another process
        return None


def _final(name: str) -> tuple[str, bool]:
    """The final file a cache file is or belongs to (``x.pth`` for ``x.pth.<token>.incomplete``), and if temporary."""
    inner = temporary_owner(name)
    partial = _PARTIAL.fullmatch(inner or name)
    return (partial["name"], True) if partial else (inner or name, inner is not None)


def _checkpoint_of(name: str) -> str:
    return name.removesuffix(".sha256").removesuffix(".release.json")  # (x.pth for x.pth.sha256)


def _ours(folder: Path, entries: Iterable[CheckpointEntry], *,
          urls: bool) -> Iterator[tuple[Path, Path, CheckpointEntry | None]]:
    """Each file of ``entries`` (and, with ``urls``, of ``weights=`` URLs): its path, checkpoint and entry."""
    names = {name: e for e in entries for name in (e.filename, safetensors_path(folder, e).name)}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        entry = names.get(_checkpoint_of(_final(path.name)[0]))
        if entry is not None and path.is_file():
            yield path, folder / entry.filename, entry
    for path in sorted(folder.glob("resnest_zoo-urls/*/*")) if urls and folder.is_dir() else []:
        if path.is_file():
            yield path, path.parent / _checkpoint_of(_final(path.name)[0]), None


def cached_files(cache_dir: str | os.PathLike[str] | None = None) -> list[CachedFile]:
    """The resnest_zoo files in the cache folder: checkpoints, fast-reload safetensors copies, partial downloads and
    other temporary files (records, release notes and locks are not listed)."""
    files = []
    for path, _, entry in _ours(resolve_cache_dir(cache_dir), catalogue().values(), urls=True):
        (final, temporary), size = _final(path.name), _size(path)
        if size is not None and (temporary or final == _checkpoint_of(final)):  # (not a record or a release note)
            if temporary:
                kind = "partial" if path.suffix == ".incomplete" else "temporary"
            else:
                kind = "safetensors" if entry is not None and path.suffix == ".safetensors" else "checkpoint"
            files.append(CachedFile(path, size, kind, entry, temporary and in_use(path)))  # type: ignore[arg-type]
    return files


def clear_cache(cache_dir: str | os.PathLike[str] | None = None, *, segmentor: str | None = None,
                dataset: str | None = None) -> list[Path]:
    """Delete the cached files of one entry (``segmentor`` and ``dataset``), or of every entry and ``weights=`` URL,
    and return them: checkpoints, records, release notes, safetensors copies, and temporary files no live process may
    still write. Waits for this host's other processes that download the same file; other files are left alone."""
    if (segmentor is None) != (dataset is None):
        raise ValueError(f"clear_cache takes both segmentor and dataset, or neither (everything); got "
                         f"segmentor={segmentor!r}, dataset={dataset!r}")
    entries = [get_entry(segmentor, dataset)] if segmentor is not None and dataset is not None else catalogue().values()
    removed: list[Path] = []
    for path, checkpoint, _ in list(_ours(resolve_cache_dir(cache_dir), entries, urls=segmentor is None)):
        with lock(checkpoint):  # never delete a file another process is downloading or verifying
            removed += remove([path] if not (_final(path.name)[1] and in_use(path)) else [])
    return removed
