"""The cache folder: the one module that knows its file names; what is cached, clearing it, and the lock.

Layout (``cache_dir=``, else ``$RESNEST_ZOO_CACHE``, else ``torch.hub.get_dir()/checkpoints``, the folder
``torch.hub.load_state_dict_from_url`` uses, so a file it downloaded is found and verified)::

    fcn_resnest101os8_voc_train.pth                          the published file, verified
    fcn_resnest101os8_voc_train.pth.sha256                   digest record, written once the file passed every check
    fcn_resnest101os8_voc_train.pth.release.json             the publisher's size and digest (GitHub release API)
    fcn_resnest101os8_voc_train.safetensors                  model-only copy for fast reloads (source digest inside)
    fcn_resnest101os8_voc_train.pth.<token>.incomplete       one download attempt's bytes (resumable)
    fcn_resnest101os8_voc_train.pth.<token>.incomplete.json  where those bytes came from (URL, ETag, size)
    <any file above>.<token>.tmp                             a file being written; renamed into place when complete
    .locks/fcn_resnest101os8_voc_train.pth.lock              cross-process lock (never deleted: others may wait on it)
    resnest_zoo-urls/<hash>/<name>                           files from explicit ``weights=`` URLs (same scheme)

Files that came through the Hugging Face Hub stay in Hugging Face's own cache (manage them with ``hf cache``).

**Temporary files** (``.incomplete``, ``.tmp``) carry a random token, never a pid (pids repeat across hosts), so
every attempt writes a file of its own, and a process writes only files it created. Whether a live process
still owns one is read from the file itself, not from a pid or a lock (both lie across hosts): a writer keeps
its file's modification time fresh (each write, and :class:`Heartbeat` every 10 s while it waits), and a writer
that stops -- an error, Ctrl-C -- *releases* its partial download by setting that time to the epoch. A
temporary file released, or not modified for :data:`STALE_SECONDS`, has no live owner (its writer died: kill -9,
power loss): ``cache list`` shows it as such and ``cache clear`` removes it. Correctness does not rest on this
judgement: a partial download is taken over only by an atomic rename (:func:`claim`), and a file is renamed into
place only after the digest of its own bytes was checked, so a wrong guess can cost a download, never a wrong file.

**The lock** (:func:`lock`) only avoids downloading one file twice at the same time. Where ``filelock`` cannot
lock at all, work goes on without it (one warning per process); where ``flock`` silently locks nothing (some
NFS, Lustre and GPFS mounts) everything stays correct for the reasons above.
"""
from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import secrets
import threading
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

__all__ = [
    "CachedFile",
    "STALE_SECONDS",
    "resolve_cache_dir",
    "checkpoint_path",
    "safetensors_path",
    "record_path",
    "release_note_path",
    "url_download_path",
    "atomic_write",
    "write_text",
    "new_partial",
    "note_path",
    "partials",
    "claim",
    "place",
    "release",
    "released",
    "in_use",
    "Heartbeat",
    "lock",
    "remove",
    "cached_files",
    "clear_cache",
]

RECORD_SUFFIX = ".sha256"
RELEASE_SUFFIX = ".release.json"
PARTIAL_SUFFIX = ".incomplete"
NOTE_SUFFIX = ".json"
TEMP_SUFFIX = ".tmp"
URL_FOLDER = "resnest_zoo-urls"
LOCK_FOLDER = ".locks"
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 60.0
"""A temporary file not modified for this long has no live owner (six missed heartbeats)."""
_RELEASED_BEFORE = 946_684_800  # 2000-01-01: an older modification time was set by release()
# a token: 12 hex digits; pids and bare names are what earlier versions wrote, found here to be cleared
_TOKEN = r"(?:\.(?:[0-9a-f]{12}|\d+))"
_TEMPORARY_TAIL = re.compile(rf"{_TOKEN}?\.incomplete(?:\.json)?(?:{_TOKEN}\.tmp)?|{_TOKEN}\.tmp")
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
    """Where a file downloaded from an explicit ``weights=`` URL is cached (one folder per URL, so files
    with the same name from different places never collide with each other or with catalogue files)."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "checkpoint.pth"
    return folder / URL_FOLDER / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16] / name


def _entry_files(folder: Path, entry: CheckpointEntry) -> list[Path]:
    """Every final file of one entry: checkpoint, its record and release note, and the safetensors copy."""
    checkpoint = checkpoint_path(folder, entry)
    return [checkpoint, record_path(checkpoint), release_note_path(checkpoint), safetensors_path(folder, entry)]


def _token() -> str:
    return secrets.token_hex(6)


# --------------------------------------------------------------------------------------- writing files

def place(temporary: Path, path: Path) -> None:
    """Rename a complete ``temporary`` file to ``path`` (atomic: readers see the old file or the new one)."""
    os.replace(temporary, path)


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path`` to write; once the block ends without error it is renamed to
    ``path``, and removed otherwise, so no half-written file is ever seen under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{_token()}{TEMP_SUFFIX}")
    try:
        yield temporary
        place(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write a small text file (digest record, note) atomically."""
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def new_partial(target: Path) -> tuple[Path, BinaryIO]:
    """A new partial download of ``target``: a file no other process knows, created and opened for writing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.with_name(f"{target.name}.{_token()}{PARTIAL_SUFFIX}")
    return path, open(path, "xb")  # noqa: SIM115 -- the caller owns and closes it


def note_path(partial: Path) -> Path:
    """The note (URL, ETag, size) that says where the bytes of a partial download came from."""
    return partial.with_name(partial.name + NOTE_SUFFIX)


def partials(target: Path) -> list[Path]:
    """The partial downloads of ``target`` left by any attempt, largest first."""
    found = [p for p in target.parent.glob(glob.escape(target.name) + "*" + PARTIAL_SUFFIX)
             if _owner(p.name) == target.name]
    return sorted(found, key=lambda p: _stat_size(p) or 0, reverse=True)


def claim(target: Path, partial: Path) -> Path | None:
    """Take ``partial`` (a partial download of ``target``) for this process by renaming it to a name of its own.
    Rename is atomic, so at most one process gets it; None when another one took or removed it first."""
    claimed = target.with_name(f"{target.name}.{_token()}{PARTIAL_SUFFIX}")
    try:
        os.rename(partial, claimed)
    except FileNotFoundError:
        return None
    return claimed


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


# -------------------------------------------------------------------------------------------- liveness

def release(path: Path) -> None:
    """Mark a partial download its writer has closed and let go: another attempt may continue it at once."""
    os.utime(path, (0, 0))


def released(path: Path) -> bool:
    """True when ``path`` was let go by its writer (:func:`release`)."""
    return path.stat().st_mtime < _RELEASED_BEFORE


def in_use(path: Path) -> bool:
    """Whether a live process may still be writing ``path``: not released, and modified within
    :data:`STALE_SECONDS` (writers refresh the time at least every 10 s). False once it is gone. A partial
    download's note lives as long as the partial download."""
    if path.name.endswith(PARTIAL_SUFFIX + NOTE_SUFFIX):
        path = path.with_name(path.name[: -len(NOTE_SUFFIX)])
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False
    return mtime >= _RELEASED_BEFORE and time.time() - mtime < STALE_SECONDS


class Heartbeat:
    """Refresh the modification time of an open file every 10 s, from a thread, while a writer waits (a slow
    server, a backoff), so that other processes see that a live process owns it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._target: int | Path = fd if os.utime in os.supports_fd else path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {path.name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self._target)
            except OSError:  # the file was taken from us; the writer finds out when it renames it
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------------ lock

@contextmanager
def lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the cross-process lock of ``path`` (in ``.locks/`` beside it), waiting while another process holds
    it (``on_wait`` is called first). Raises :class:`OSError` when the folder cannot be written (read-only,
    no permission, full); where files cannot be locked at all, goes on without the lock (one warning)."""
    lock_file = path.parent / LOCK_FOLDER / (path.name + ".lock")
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
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
        _warn_lock_free(path.parent, exc)
        yield
        return
    try:
        yield
    finally:
        held.release()


def _warn_lock_free(folder: Path, error: BaseException) -> None:
    global _lock_free_warned
    if _lock_free_warned:
        return
    _lock_free_warned = True
    warnings.warn(
        f"cannot lock files in {folder} ({type(error).__name__}: {error}); working without locks. Downloads stay "
        "verified and each process writes files of its own, but processes starting together may each download "
        "the same file.", RuntimeWarning, stacklevel=4)


# ----------------------------------------------------------------------------------------- list, clear

def _stat_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # removed meanwhile by another process
        return None


def _owner(name: str) -> str | None:
    """The final file a temporary file belongs to (``x.pth`` for ``x.pth.<token>.incomplete``, or for
    ``.x.safetensors.<pid>.tmp`` as earlier versions wrote), or None for a file that is not temporary."""
    bare = name[1:] if name.startswith(".") else name
    return next((bare[:i] for i, char in enumerate(bare) if char == "." and i and _TEMPORARY_TAIL.fullmatch(bare[i:])),
                None)


def _checkpoint_of(name: str) -> str:
    """The checkpoint a final file belongs to: ``x.pth`` for ``x.pth``, ``x.pth.sha256`` and ``x.pth.release.json``."""
    for suffix in (RECORD_SUFFIX, RELEASE_SUFFIX):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


@dataclass(frozen=True)
class _Group:
    """One checkpoint's files: the final ones (present or not) and the temporary ones found."""

    checkpoint: Path
    entry: CheckpointEntry | None
    finals: list[Path]
    temporaries: list[Path]


def _groups(folder: Path, entries: Iterable[CheckpointEntry], *, url_files: bool) -> Iterator[_Group]:
    for entry in entries:
        finals = _entry_files(folder, entry)
        names = {p.name for p in finals}
        stem = glob.escape(Path(entry.filename).stem)
        found = {Path(p) for pattern in (stem, "." + stem) for p in glob.glob(str(folder / pattern) + "*")}
        yield _Group(finals[0], entry, finals, sorted(p for p in found if _owner(p.name) in names))
    url_folders = sorted(p for p in (folder / URL_FOLDER).glob("*") if p.is_dir()) if url_files else []
    for url_folder in url_folders:
        files = sorted(p for p in url_folder.iterdir() if p.is_file())
        for name in sorted({_checkpoint_of(_owner(p.name) or p.name) for p in files}):
            mine = [p for p in files if _checkpoint_of(_owner(p.name) or p.name) == name]
            yield _Group(url_folder / name, None, [p for p in mine if _owner(p.name) is None],
                         [p for p in mine if _owner(p.name) is not None])


def cached_files(cache_dir: str | os.PathLike[str] | None = None) -> list[CachedFile]:
    """The resnest_zoo files in the cache folder: published checkpoints, fast-reload safetensors copies,
    partial downloads and other temporary files (``in_use`` says whether a live process may own one), each
    with its size and catalogue entry. Digest records, release notes and locks are not listed."""
    folder = resolve_cache_dir(cache_dir)
    if not folder.is_dir():
        return []
    files = []
    for group in _groups(folder, catalogue().values(), url_files=True):
        copy = safetensors_path(folder, group.entry) if group.entry is not None else None
        listed: list[tuple[Path, Kind]] = [(group.checkpoint, "checkpoint"), *([(copy, "safetensors")] if copy else [])]
        listed += [(p, "partial" if p.name.endswith(PARTIAL_SUFFIX) else "temporary") for p in group.temporaries]
        for path, kind in listed:
            size = _stat_size(path)
            if size is not None:
                temporary = kind in ("partial", "temporary")
                files.append(CachedFile(path, size, kind, group.entry, temporary and in_use(path)))
    return files


def clear_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    segmentor: str | None = None,
    dataset: str | None = None,
) -> list[Path]:
    """Delete cached resnest_zoo files and return the removed paths.

    With ``segmentor`` and ``dataset``: that entry's checkpoint, digest record, release note, safetensors copy
    and temporary files. With neither: those of every entry, and all files downloaded from ``weights=`` URLs.
    Waits for a download of the same file in this host's other processes to finish first; temporary files
    that a live process may still be writing (see :func:`cached_files`) are kept. Other files in the folder
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
    entries = [get_entry(segmentor, dataset)] if segmentor is not None and dataset is not None else catalogue().values()
    for group in _groups(folder, entries, url_files=segmentor is None):
        with lock(group.checkpoint):  # never delete a file another process is downloading or verifying
            removed += remove(group.finals)
            removed += remove(p for p in group.temporaries if not in_use(p))
    return removed
