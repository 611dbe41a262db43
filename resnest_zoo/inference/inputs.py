"""What to segment: files, folders, glob patterns and lists of paths, expanded into one deterministic work list.

Each :class:`InputFile` carries the name its outputs get (relative to the output folder, without suffix), so that
the outputs keep the inputs' folder structure:

* a file: its own name (``photos/a.jpg`` -> ``a``);
* a folder: every image below it (recursively, the usual image extensions in any case), sorted, named by its
  path inside the folder (``photos/`` -> ``2024/a``);
* a glob pattern (``'photos/**/*.jpg'``, expanded here so a million names need no shell): the matching image
  files, sorted, named by their path below the pattern's fixed leading folder;
* a list file (``--list FILE``): one path per line (blank lines and lines starting with ``#`` skipped, relative
  paths are relative to the list's folder), in the list's order, named by their path below the folder the listed
  files have in common.

Arguments are taken in the order given; a file reached twice is kept once (the first time). Two inputs whose
names would collide (``a.jpg`` and ``a.png``) keep their suffix in the name (``a.jpg``, ``a.png``).
"""
from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["IMAGE_SUFFIXES", "InputFile", "collect_inputs", "read_list_file", "is_pattern"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"})


@dataclass(frozen=True)
class InputFile:
    """An input ``path`` and the ``name`` of its outputs (relative, without suffix)."""

    path: Path
    name: PurePosixPath


def is_pattern(text: str) -> bool:
    """Whether ``text`` holds glob wildcards (``*``, ``?``, ``[``)."""
    return glob.has_magic(text)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def read_list_file(list_file: str | os.PathLike[str]) -> list[Path]:
    """The paths of a list file (see the module docs); ``FileNotFoundError`` when it does not exist."""
    list_path = Path(list_file)
    if not list_path.is_file():
        raise FileNotFoundError(f"list file {str(list_path)!r} does not exist; expected a text file with one image "
                                f"path per line")
    base = list_path.resolve().parent
    paths = []
    with open(list_path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line).expanduser()
                paths.append(path if path.is_absolute() else base / path)
    return paths


def _named_below(files: Iterable[Path], base: Path) -> list[tuple[Path, PurePosixPath]]:
    return [(path, PurePosixPath(path.relative_to(base).as_posix())) for path in files]


def _pattern_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if is_pattern(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def collect_inputs(inputs: Sequence[str | os.PathLike[str]] = (), *, list_file: str | os.PathLike[str] | None = None,
                   exclude: str | os.PathLike[str] | None = None) -> list[InputFile]:
    """The work list of ``inputs`` (files, folders, glob patterns) and the paths of ``list_file``; see the module docs.

    Files below ``exclude`` (the output folder) are left out of folders and patterns, so that a rerun never
    segments its own outputs. Paths that do not exist are kept (the run reports them).
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[tuple[Path, PurePosixPath]] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if _is_image(p) and not _inside(p, excluded))
            found += _named_below(images, path)
        elif is_pattern(text) and not path.exists():
            base = _pattern_base(text)
            matches = sorted(Path(m) for m in glob.iglob(text, recursive=True))
            found += _named_below((m for m in matches if _is_image(m) and not _inside(m, excluded)), base)
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
