"""The cache folder: the one module that knows its file names; partial downloads, the lock, listing and clearing.

Layout (``cache_dir=``, else ``$RESNEST_ZOO_CACHE``, else ``torch.hub.get_dir()/checkpoints``, the folder
``torch.hub.load_state_dict_from_url`` uses, so a file it downloaded is found and verified)::

    fcn_resnest101os8_voc_train.pth                          the published file, verified
    fcn_resnest101os8_voc_train.pth.sha256                   digest record, written once the file passed every check
    fcn_resnest101os8_voc_train.pth.release.json             the publisher's size and digest (GitHub release API)
    fcn_resnest101os8_voc_train.safetensors                  model-only copy for fast reloads (source digest inside)
    fcn_resnest101os8_voc_train.pth.<token>.incomplete       one download attempt's bytes (resumable)
    fcn_resnest101os8_voc_train.pth.<token>.incomplete.json  where those bytes came from (URL, validator, size)
    .<any file above>.<token>.partial                        being written (:func:`resnest_zoo.files.atomic_write`)
    .locks/fcn_resnest101os8_voc_train.pth.lock              cross-process lock (never deleted: others may wait on it)
    resnest_zoo-urls/<hash>/<name>                           files from explicit ``weights=`` URLs (same scheme)

Files that came through the Hugging Face Hub stay in Hugging Face's own cache (manage them with ``hf cache``).

**Temporary files** carry a random token, so every attempt writes files of its own. Whether a live process still
owns one is read from its modification time alone: writing refreshes it, a writer that stops dates its partial
download back (:func:`let_go`), and a file not modified for :data:`STALE_SECONDS` has no live owner: ``cache list``
says so, ``cache clear`` removes it, a download continues it. Correctness does not rest on this judgement: a partial
download is taken by an atomic rename (:func:`claim`) and its bytes are copied into a file of the taker's own (its
writer, if alive after all, writes on into a file nobody reads), and a file is renamed into place only after the
digest of its own bytes was checked. A wrong judgement costs a download, never a wrong file.

**The lock** (:func:`lock`) only saves downloading one file twice at the same time. Where files cannot be locked at
all, work goes on without it (one warning); where ``flock`` locks nothing (some NFS, Lustre and GPFS mounts),
everything stays correct for the reasons above.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from filelock import FileLock
from filelock import Timeout as LockTimeout

from .. import environment
from ..catalogue import CheckpointEntry, catalogue, get_entry
from ..errors import ConfigurationError
from ..files import temporary_owner

__all__ = ["CachedFile", "STALE_SECONDS", "resolve_cache_dir", "checkpoint_path", "safetensors_path", "record_path",
           "release_note_path", "url_download_path", "new_partial", "note_path", "partials", "claim", "let_go",
           "in_use", "lock", "remove", "cached_files", "clear_cache"]

RECORD_SUFFIX = ".sha256"
RELEASE_SUFFIX = ".release.json"
PARTIAL_SUFFIX = ".incomplete"
NOTE_SUFFIX = ".json"
URL_FOLDER = "resnest_zoo-urls"
LOCK_FOLDER = ".locks"
STALE_SECONDS = 60.0
"""A temporary file not modified for this long has no live owner."""
_PARTIAL = re.compile(r"(?P<name>.+)\.[0-9a-f]{12}\.incomplete(?P<note>\.json)?")
_UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_lock_free_warned = False

Kind = Literal["checkpoint", "safetensors", "partial", "temporary"]


@dataclass(frozen=True)
class CachedFile:
    """One file in the cache: path, size in bytes, kind, catalogue entry (None for ``weights=`` URLs) and, for
    temporary files, whether a live process may still be writing it."""

    path: Path
    size: int
    kind: Kind
    entry: CheckpointEntry | None
    in_use: bool = False


# --------------------------------------------------------------------------------------------------- names

def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$RESNEST_ZOO_CACHE``, else torch.hub's checkpoints folder. It is not
    created here (downloading does); a path that is, or lies under, a file raises
    :class:`~resnest_zoo.ConfigurationError`."""
    from_env = environment.text(environment.CACHE)
    if cache_dir is not None or from_env:
        folder = Path(cache_dir if cache_dir is not None else from_env).expanduser()  # type: ignore[arg-type]
    else:
        import torch.hub

        folder = Path(torch.hub.get_dir()).expanduser() / "checkpoints"
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        given = "cache_dir=" if cache_dir is not None else f"{environment.CACHE.name}=" if from_env else "torch.hub"
        raise ConfigurationError(f"cannot use {folder} (from {given}) as the cache folder: {existing} is a file, not a "
                                 f"folder; give a folder (--cache-dir, {environment.CACHE.name} or cache_dir=)")
    return folder


def checkpoint_path(folder: Path, entry: CheckpointEntry) -> Path:
    """Where the published file of ``entry`` lives in the cache folder (its published file name)."""
    return folder / entry.filename


def safetensors_path(folder: Path, entry: CheckpointEntry) -> Path:
    """The model-only fast-reload copy of ``entry`` in the cache folder."""
    return folder / (Path(entry.filename).stem + ".safetensors")


def record_path(path: Path) -> Path:
    """The digest record of ``path`` (``sha256sum`` format), written once the file passed every check."""
    return path.with_name(path.name + RECORD_SUFFIX)


def release_note_path(path: Path) -> Path:
    """What the publisher said about ``path`` (size and digest from the GitHub release API), kept beside it."""
    return path.with_name(path.name + RELEASE_SUFFIX)


def url_download_path(folder: Path, url: str) -> Path:
    """Where a file from an explicit ``weights=`` URL is cached: a folder per URL, so files of the same name from
    different places never collide with each other or with catalogue files."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "checkpoint.pth"
    return folder / URL_FOLDER / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16] / name


# ----------------------------------------------------------------------------------------- partial downloads

def _partial_name(target: Path) -> Path:
    return target.with_name(f"{target.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")


def new_partial(target: Path) -> tuple[Path, BinaryIO]:
    """A new partial download of ``target``: a file no other process knows, created and opened for writing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = _partial_name(target)
    return path, open(path, "xb")  # noqa: SIM115 -- the caller owns and closes it


def note_path(partial: Path) -> Path:
    """The note (URL, validator, size) that says where the bytes of a partial download came from."""
    return partial.with_name(partial.name + NOTE_SUFFIX)


def partials(target: Path) -> list[Path]:
    """The partial downloads of ``target`` left by any attempt, largest first."""
    found = []
    for path in target.parent.glob(f"*{PARTIAL_SUFFIX}"):
        match = _PARTIAL.fullmatch(path.name)
        size = _size(path)
        if match is not None and match["name"] == target.name and size is not None:
            found.append((size, path))
    return [path for _, path in sorted(found, reverse=True)]


def claim(target: Path, partial: Path) -> Path | None:
    """Take ``partial`` (a partial download of ``target``) by renaming it to a name of this process's own. Rename is
    atomic, so one process at most gets it; None when another one took or removed it first."""
    claimed = _partial_name(target)
    try:
        os.rename(partial, claimed)
    except FileNotFoundError:
        return None
    return claimed


def let_go(partial: Path) -> None:
    """Date back a partial download whose writer stopped (an error, Ctrl-C), so that the next attempt continues it at
    once rather than after :data:`STALE_SECONDS`."""
    old = time.time() - 2 * STALE_SECONDS
    try:
        os.utime(partial, (old, old))
    except FileNotFoundError:  # another process took it, judging it abandoned
        pass


def in_use(path: Path) -> bool:
    """Whether a live process may still be writing ``path``: modified within :data:`STALE_SECONDS` (a partial
    download's note lives as long as its partial download). False once it is gone."""
    if _PARTIAL.fullmatch(path.name) and path.suffix == NOTE_SUFFIX:
        path = path.with_suffix("")
    try:
        return time.time() - path.stat().st_mtime < STALE_SECONDS
    except FileNotFoundError:
        return False


def remove(paths: Iterable[Path]) -> list[Path]:
    """Delete the files that exist among ``paths``; return those deleted."""
    removed = []
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


# ------------------------------------------------------------------------------------------------ lock

@contextmanager
def lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the cross-process lock of ``path`` (in ``.locks/`` beside it), waiting while another process holds it
    (``on_wait`` is called first). Raises :class:`OSError` when the folder cannot be written (read-only, no
    permission, full); where files cannot be locked at all, goes on without the lock (one warning)."""
    lock_file = path.parent / LOCK_FOLDER / (path.name + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    held: FileLock | None = None
    try:
        held = FileLock(str(lock_file))
        try:
            held.acquire(timeout=0)
        except LockTimeout:
            if on_wait is not None:
                on_wait()
            held.acquire()
    except (NotImplementedError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in _UNWRITABLE:
            raise
        held = None
        _warn_lock_free(path.parent, exc)
    try:
        yield
    finally:
        if held is not None:
            held.release()


def _warn_lock_free(folder: Path, error: BaseException) -> None:
    global _lock_free_warned
    if not _lock_free_warned:
        _lock_free_warned = True
        warnings.warn(f"cannot lock files in {folder} ({type(error).__name__}: {error}); working without locks. "
                      "Downloads stay verified and each process writes files of its own, but processes starting "
                      "together may each download the same file.", RuntimeWarning, stacklevel=5)


# ----------------------------------------------------------------------------------------- list, clear

def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # removed meanwhile by another process
        return None


def _final(name: str) -> tuple[str, bool]:
    """The final file a cache file belongs to (``x.pth`` for ``x.pth.<token>.incomplete.json`` and for
    ``.x.pth.sha256.<token>.partial``, itself for a final file), and whether it is temporary."""
    inner = temporary_owner(name)
    partial = _PARTIAL.fullmatch(inner or name)
    return (partial["name"], True) if partial else (inner or name, inner is not None)


def _checkpoint_of(name: str) -> str:
    """The checkpoint a final file belongs to: ``x.pth`` for ``x.pth``, ``x.pth.sha256`` and ``x.pth.release.json``."""
    return name.removesuffix(RECORD_SUFFIX).removesuffix(RELEASE_SUFFIX)


def _groups(folder: Path, entries: Iterable[CheckpointEntry], *, urls: bool) -> dict[Path, list[Path]]:
    """The files of each checkpoint present in the cache (final and temporary), by the checkpoint's path: those of
    ``entries`` and, with ``urls``, those downloaded from ``weights=`` URLs."""
    names = {}
    for entry in entries:
        names[entry.filename] = names[safetensors_path(folder, entry).name] = entry.filename
    groups: dict[Path, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        checkpoint = names.get(_checkpoint_of(_final(path.name)[0]))
        if checkpoint is not None and path.is_file():
            groups.setdefault(folder / checkpoint, []).append(path)
    for path in sorted(folder.glob(f"{URL_FOLDER}/*/*") if urls else []):
        if path.is_file():
            groups.setdefault(path.parent / _checkpoint_of(_final(path.name)[0]), []).append(path)
    return groups


def cached_files(cache_dir: str | os.PathLike[str] | None = None) -> list[CachedFile]:
    """The resnest_zoo files in the cache folder: published checkpoints, fast-reload safetensors copies, partial
    downloads and other temporary files (``in_use``: a live process may own it), each with its size and catalogue
    entry. Digest records, release notes and locks are not listed."""
    folder = resolve_cache_dir(cache_dir)
    if not folder.is_dir():
        return []
    entries = {entry.filename: entry for entry in catalogue().values()}
    files = []
    for checkpoint, paths in _groups(folder, entries.values(), urls=True).items():
        entry = entries.get(checkpoint.name) if checkpoint.parent == folder else None
        for path in paths:
            final, temporary = _final(path.name)
            size = _size(path)
            if size is None or (not temporary and final != _checkpoint_of(final)):
                continue  # gone meanwhile, or a record or release note
            if temporary:
                kind: Kind = "partial" if path.name.endswith(PARTIAL_SUFFIX) else "temporary"
            else:
                kind = "safetensors" if path.suffix == ".safetensors" and entry is not None else "checkpoint"
            files.append(CachedFile(path, size, kind, entry, temporary and in_use(path)))
    return files


def clear_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    segmentor: str | None = None,
    dataset: str | None = None,
) -> list[Path]:
    """Delete cached resnest_zoo files and return the removed paths.

    With ``segmentor`` and ``dataset``: that entry's checkpoint, digest record, release note, safetensors copy and
    temporary files. With neither: those of every entry, and all files downloaded from ``weights=`` URLs. Waits
    for a download of the same file in this host's other processes to finish first; temporary files that a live
    process may still be writing (see :func:`cached_files`) are kept. Other files in the folder (other libraries
    share torch.hub's folder) and the Hugging Face cache are left alone.
    """
    if (segmentor is None) != (dataset is None):
        raise ValueError(f"clear_cache takes both segmentor and dataset, or neither (everything); got "
                         f"segmentor={segmentor!r}, dataset={dataset!r}")
    folder = resolve_cache_dir(cache_dir)
    if not folder.is_dir():
        return []
    entries = [get_entry(segmentor, dataset)] if segmentor is not None and dataset is not None else catalogue().values()
    removed: list[Path] = []
    for checkpoint, paths in _groups(folder, entries, urls=segmentor is None).items():
        with lock(checkpoint):  # never delete a file another process is downloading or verifying
            removed += remove(p for p in paths if not (_final(p.name)[1] and in_use(p)))
    return removed
