"""What to segment: files, folders, glob patterns and lists of paths, expanded into one deterministic work list.

Each :class:`InputFile` carries the name its outputs get: a relative path without suffix, never holding ``..``, so
every output lands inside the output folder, and the outputs keep the inputs' folder structure:

* a file: its own name (``photos/a.jpg`` -> ``a``);
* a folder: every image below it (recursively, following symbolic links to folders, each folder once; the usual
  image suffixes in any case), sorted, named by its path inside the folder as given (``photos/`` -> ``2024/a``;
  a linked folder keeps the link's name);
* a glob pattern (``'photos/**/*.jpg'``, expanded here so a million names need no shell, with the same folder
  walk): the matching image files, sorted, named by their path below the pattern's fixed leading folder;
* a list file (``--list FILE``): one path per line (UTF-8, a byte-order mark allowed; blank lines and lines starting
  with ``#`` skipped; relative paths are relative to the list's folder), in the list's order, each normalised
  (``a/../b`` is ``b``; after a symbolic link, ``..`` is its target's parent, as the system reads the path) and
  named by its path below the deepest folder that holds every listed file -- so a list
  of files below one folder names them as that folder's tree, and files outside the list's folder are named
  from the folder they share with the rest.

Arguments are taken in the order given; a file reached twice is kept once (the first time). Two inputs whose
names would collide (``a.jpg`` and ``a.png``) keep their suffix in the name (``a.jpg``, ``a.png``).
"""
from __future__ import annotations

import fnmatch
import glob
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..files import IMAGE_SUFFIXES, walk

__all__ = ["InputFile", "collect_inputs", "read_list_file", "is_pattern"]


@dataclass(frozen=True)
class InputFile:
    """An input ``path`` and the ``name`` of its outputs (relative, without suffix, never holding ``..``)."""

    path: Path
    name: PurePosixPath


def is_pattern(text: str) -> bool:
    """Whether ``text`` holds glob wildcards (``*``, ``?``, ``[``)."""
    return glob.has_magic(text)


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def read_list_file(list_file: str | os.PathLike[str]) -> list[Path]:
    """The paths of a list file (see the module docs), normalised; ``FileNotFoundError`` when it does not exist."""
    list_path = Path(list_file)
    if not list_path.is_file():
        raise FileNotFoundError(f"list file {str(list_path)!r} does not exist; expected a text file with one image "
                                f"path per line")
    base = list_path.resolve().parent
    paths = []
    with open(list_path, encoding="utf-8-sig") as handle:  # utf-8-sig: a byte-order mark is not part of a path
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line).expanduser()
                paths.append(_normalised(path if path.is_absolute() else base / path))
    return paths


def _normalised(path: Path) -> Path:
    """``path`` without ``.`` or ``..``, naming the file the system would open: ``a/../b`` is ``b`` when ``a`` is a
    folder, but when ``a`` is a symbolic link ``..`` is the parent of its target, as for any program reading the
    path (so the folders before a ``..`` are resolved; a path without ``..`` keeps its links' names)."""
    if ".." not in path.parts:
        return Path(os.path.normpath(path))
    if path.name in ("", ".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def _named_below(files: Iterable[Path], base: Path) -> list[tuple[Path, PurePosixPath]]:
    return [(path, PurePosixPath(path.relative_to(base).as_posix())) for path in files]


def _split_pattern(pattern: str) -> tuple[Path, tuple[str, ...]]:
    """The fixed leading folder of a glob pattern, and the names of the rest."""
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) and not is_pattern(parts[fixed]):
        fixed += 1
    rest = parts[fixed:]
    if ".." in rest:
        raise ValueError(f"glob pattern {pattern!r}: '..' after a wildcard is not supported; write the folder "
                         f"without wildcards before it")
    return (Path(*parts[:fixed]) if fixed else Path(".")), rest


def _matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether a relative path's names match a glob pattern's, as :mod:`glob` matches them: ``**`` any number of
    folders, other names by :func:`fnmatch.fnmatchcase`; a name starting with a dot only by a pattern that does."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        for skipped in range(len(parts) + 1):
            if _matches(parts[skipped:], rest):
                return True
            if skipped < len(parts) and parts[skipped].startswith("."):
                return False
        return False
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _matches(parts[1:], rest)


def collect_inputs(inputs: Sequence[str | os.PathLike[str]] = (), *, list_file: str | os.PathLike[str] | None = None,
                   exclude: str | os.PathLike[str] | None = None) -> list[InputFile]:
    """The work list of ``inputs`` (files, folders, glob patterns) and the paths of ``list_file``; see the module docs.

    Files below ``exclude`` (the output folder) are left out of folders and patterns, so that a rerun never
    segments its own outputs. Paths that do not exist are kept (the run reports them), links that point nowhere
    too. Raises :class:`~resnest_zoo.FolderReadError` for a folder that cannot be listed.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[tuple[Path, PurePosixPath]] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            images = [p for p in walk(path, endings=IMAGE_SUFFIXES) if not _inside(p, excluded)]
            found += _named_below(images, path)
        elif is_pattern(text) and not path.exists():
            base, rest = _split_pattern(text)
            candidates = walk(base, endings=IMAGE_SUFFIXES) if base.is_dir() else []
            found += _named_below([p for p in candidates if _matches(p.relative_to(base).parts, rest)
                                   and not _inside(p, excluded)], base)
        else:
            found.append((path, PurePosixPath(path.name)))
    if list_file is not None:
        listed = read_list_file(list_file)
        if listed:
            common = Path(os.path.commonpath([str(p.parent) for p in listed]))
            found += _named_below(listed, common)
    seen: set[Path] = set()
    unique = []
    for path, relative in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, relative))
    stems = Counter(relative.with_suffix("") for _, relative in unique)
    return [InputFile(path, relative.with_suffix("") if stems[relative.with_suffix("")] == 1 else relative)
            for path, relative in unique]
