"""Files on disk, the same way everywhere: listing folders, writing files atomically, checking outputs first.

* :func:`walk` lists a folder's files for every reader of the package (images to predict, the three dataset
  layouts, a training folder): recursively, following symbolic links to folders -- datasets are often linked in
  from shared storage -- with each folder walked once, so a link loop ends and two links to one folder do not
  list its files twice. Links that point nowhere are listed too: reading them fails, and is reported, like any
  unreadable file. A folder that cannot be listed raises :class:`~resnest_zoo.errors.FolderReadError` rather than
  being skipped.
* :func:`atomic_write` writes under a temporary name beside the target and renames it into place, so no reader
  ever sees a half-written file; every writer of the package (the cache, saved models, exports, masks, JSON
  results) goes through it, and :func:`temporary_owner` recognises what a killed writer left behind.
* :func:`check_output` says before a long run whether its output can be written at all.

Torch-free and dependency-free.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import FolderReadError, OutputWriteError

__all__ = [
    "IMAGE_SUFFIXES",
    "is_image_name",
    "walk",
    "atomic_write",
    "temporary_path",
    "temporary_owner",
    "check_output",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"})
"""File name endings read as images (in any case) wherever a folder is searched for pictures."""

_TEMPORARY = re.compile(r"\.(?P<name>.+?)(?:\.[0-9a-f]{12})?\.partial")


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """Whether the file name ends in one of :data:`IMAGE_SUFFIXES` (any case)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_SUFFIXES


def walk(folder: str | os.PathLike[str], *, endings: Collection[str] | None = None) -> list[Path]:
    """The files below ``folder`` whose names end with one of ``endings`` (any case; all files when None), sorted.

    Symbolic links to folders are followed, and every folder is walked once however many links reach it (the
    first path to it, in sorted order, names its files). Dangling links are included. Paths are returned below
    ``folder`` as given (not resolved), so names relative to it keep the structure the user sees.

    Raises :class:`~resnest_zoo.errors.FolderReadError` when ``folder`` or a folder below it cannot be listed.
    """
    root = Path(folder)
    wanted = tuple(ending.lower() for ending in endings) if endings is not None else None
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []

    def fail(error: OSError) -> None:
        name = error.filename or root
        raise FolderReadError(f"cannot list the folder {str(name)!r}: {error.strerror or error}; fix its permissions "
                              f"or leave it out") from None

    for current, folders, files in os.walk(root, onerror=fail, followlinks=True):
        try:
            status = os.stat(current)
        except OSError as error:
            fail(error)
        key = (status.st_dev, status.st_ino)
        if key in seen:  # reached before through another link: walked once
            folders[:] = []
            continue
        seen.add(key)
        folders.sort()
        base = Path(current)
        found += [base / name for name in files if wanted is None or name.lower().endswith(wanted)]  # dangling too
    return sorted(found)


def temporary_path(path: str | os.PathLike[str], *, unique: bool = True) -> Path:
    """The temporary name :func:`atomic_write` writes ``path`` under: ``.NAME.<token>.partial`` beside it
    (``.NAME.partial`` when not ``unique``): hidden, and with no suffix that a search for images or results would
    take for a finished file."""
    path = Path(path)
    token = f".{secrets.token_hex(6)}" if unique else ""
    return path.with_name(f".{path.name}{token}.partial")


def temporary_owner(name: str) -> str | None:
    """The file name a temporary file of :func:`atomic_write` was going to become, or None for any other name."""
    match = _TEMPORARY.fullmatch(name)
    return None if match is None else match["name"]


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, unique: bool = True, siblings: Collection[str] = ()) -> Iterator[Path]:
    """Yield a temporary name beside ``path`` to write; when the block ends without error it is renamed to
    ``path`` (atomic on POSIX), otherwise removed, so no half-written file ever has the final name.

    ``unique=True`` gives every call a name of its own, for files that several processes may write at once (the
    cache); ``unique=False`` a fixed one, for files with one writer, so what a killed run left is overwritten by
    the next. ``siblings``: suffixes of files the writer creates beside the temporary one (OpenVINO writes
    ``.bin`` beside ``.xml``); they are renamed into place first. The folder is created if missing. The files
    get the permissions of any new file (the umask honoured), not whatever their writer chose.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path, unique=unique)
    try:
        mode = _new_file_mode(temporary)
        yield temporary
        for suffix in siblings:
            _set_mode(temporary.with_suffix(suffix), mode)
            os.replace(temporary.with_suffix(suffix), path.with_suffix(suffix))
        _set_mode(temporary, mode)
        os.replace(temporary, path)
    finally:
        for leftover in (temporary, *(temporary.with_suffix(suffix) for suffix in siblings)):
            leftover.unlink(missing_ok=True)


def _new_file_mode(temporary: Path) -> int:
    """Create ``temporary`` empty, as any new file (``0o666`` less the process's umask, or what the folder's default
    ACL gives), and return its permission bits: the mode the finished file gets, whatever its writer did (some,
    such as safetensors, write a private ``0o600`` file of their own and rename it over ours)."""
    temporary.unlink(missing_ok=True)  # what a killed writer left under a fixed name
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return stat.S_IMODE(os.fstat(descriptor).st_mode)
    finally:
        os.close(descriptor)


def _set_mode(path: Path, mode: int) -> None:
    if stat.S_IMODE(os.stat(path).st_mode) != mode:
        os.chmod(path, mode)


def check_output(path: str | os.PathLike[str], *, folder: bool = False, what: str = "",
                 hint: str = "choose another path") -> None:
    """Raise :class:`~resnest_zoo.errors.OutputWriteError` unless ``path`` can be written: a file (or, with
    ``folder=True``, a folder to write into) whose nearest existing folder takes a new file. Checked by creating an
    anonymous file there, so nothing is left behind and nothing is created. ``what`` names the output and ``hint``
    says what to do, in the message."""
    path = Path(path)
    target = f"{what} into {path}".lstrip() if folder else f"the {what} {path}" if what else str(path)
    if path.is_dir() and not folder:
        raise OutputWriteError(f"cannot write {target}: it is a folder; give a file name, {hint}")
    if path.exists() and not path.is_dir() and folder:
        raise OutputWriteError(f"cannot write {target}: it is a file, not a folder; {hint}")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputWriteError(f"cannot write {target}: {existing} is a file, not a folder; {hint}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise OutputWriteError(f"cannot write {target}: {existing} is not writable ({error.strerror or error}); "
                               f"{hint}") from None
