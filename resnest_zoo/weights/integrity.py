"""Digests: hashing files, what a file must be (:class:`Expected`), the one size-then-digest check, and the
digest records kept for entries not yet pinned.

Trust rules (applied by :mod:`resnest_zoo.weights.obtain`), strongest first:

* a *pin* -- the catalogue's ``sha256`` or one given by the caller -- always decides;
* else the *publisher's* digest and size, read from the GitHub release API (:mod:`resnest_zoo.weights.release`);
* else the *record* of the file's first complete download (``<file>.sha256``, ``sha256sum`` format), written
  only once that file passed every check (digest, size, and reading safely as a checkpoint that fits its
  entry), so a bad first download is never trusted. Every later read is checked against it (trust on first use,
  said once per process by an :class:`UnpinnedCheckpointWarning`).
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import IntegrityError
from . import cache

__all__ = [
    "FileDigest",
    "Expected",
    "UnpinnedCheckpointWarning",
    "hash_file",
    "sha256_file",
    "verify",
    "mismatch",
    "check_digest",
    "normalise_sha256",
    "read_record",
    "write_record",
    "warn_first_use",
]

CHUNK_SIZE = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_first_use_warned = False


class UnpinnedCheckpointWarning(UserWarning):
    """A checkpoint is checked against the digest of its first download only: no pin and no publisher's digest."""


@dataclass(frozen=True)
class FileDigest:
    """The sha256 digest (lowercase hex) and byte size of a file."""

    path: Path
    sha256: str
    size: int

    def __str__(self) -> str:
        return f"{self.sha256}  {self.size}  {self.path}"


@dataclass(frozen=True)
class Expected:
    """What a file must be: its sha256 and size where known, and where each requirement comes from (for
    messages). ``first_use`` marks a digest that is only the record of a first download."""

    sha256: str | None = None
    digest_from: str = ""
    size: int | None = None
    size_from: str = ""
    first_use: bool = False


def hash_file(path: str | os.PathLike[str], *, into: BinaryIO | None = None,
              on_chunk: Callable[[int], Any] | None = None) -> Any:
    """The running sha256 (a ``hashlib`` object) of a file read in 1 MiB chunks; each chunk is also written to
    ``into`` and its length passed to ``on_chunk`` when given (copying and hashing in one read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(chunk)
            if into is not None:
                into.write(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return digest


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 digest of a file as lowercase hex (about 1 s per GB)."""
    return hash_file(path).hexdigest()


def verify(path: str | os.PathLike[str]) -> FileDigest:
    """The sha256 digest and size of ``path``: what to put in the catalogue to pin a checkpoint.

    >>> d = verify("fcn_resnest101os8_voc_train.pth")        # doctest: +SKIP
    >>> print(d.sha256, d.size)                               # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot compute the digest of {str(path)!r}: no such file")
    return FileDigest(path=path, sha256=sha256_file(path), size=path.stat().st_size)


def mismatch(sha256: str, size: int, expected: Expected) -> str | None:
    """Why a file with this digest and size is not the expected one (size first, then digest), or None."""
    if expected.size is not None and size != expected.size:
        return f"size mismatch: expected {expected.size} bytes ({expected.size_from}), found {size}"
    if expected.sha256 is not None and sha256 != expected.sha256:
        return (f"digest mismatch: sha256 expected {expected.sha256} ({expected.digest_from}), found {sha256} "
                f"({size} bytes)")
    return None


def check_digest(path: Path, expected: str, *, found: str | None = None, what: str = "") -> None:
    """Raise :class:`IntegrityError` unless ``path`` has digest ``expected`` (``found`` saves re-hashing)."""
    found = found if found is not None else sha256_file(path)
    problem = mismatch(found, path.stat().st_size, Expected(sha256=expected, digest_from=what or "the pin"))
    if problem is not None:
        raise IntegrityError(f"{path} failed verification: {problem}")


def normalise_sha256(value: str, *, what: str = "sha256") -> str:
    """``value`` as 64 lowercase hex digits, or :class:`ValueError` naming what was received."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value.strip().lower()):
        raise ValueError(f"{what} must be 64 hexadecimal digits (a sha256 digest), got {value!r}")
    return value.strip().lower()


def read_record(path: Path) -> str | None:
    """The digest recorded for ``path`` (see the module docstring), or None when there is no record.

    A record that cannot be parsed raises :class:`IntegrityError`: it is never silently replaced.
    """
    record = cache.record_path(path)
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    fields = text.split()
    if not fields or not _HEX64.fullmatch(fields[0]):
        raise IntegrityError(
            f"the digest record {record} is damaged (expected '<sha256>  {path.name}', found {text[:100]!r}): delete "
            f"{record} and {path}, and the file will be downloaded and checked again"
        )
    return fields[0]


def write_record(path: Path, sha256: str) -> Path:
    """Record ``sha256`` as the digest of ``path``, atomically, in ``sha256sum -c`` format."""
    return cache.write_text(cache.record_path(path), f"{sha256}  {path.name}\n")


def _outside_caller() -> int:
    """The ``stacklevel`` of the first frame outside this package: warnings point at the user's own line."""
    frame, level = sys._getframe(2), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] == __package__.split(".")[0]:
        frame, level = frame.f_back, level + 1
    return level


def warn_first_use(filename: str, sha256: str, *, url: str | None = None, reason: str | None = None) -> None:
    """Warn, once per process, that a checkpoint is checked only against the digest of its first download
    (no pin, and no digest from its publisher: ``reason`` says why), or was given as a ``url`` without sha256=."""
    global _first_use_warned
    if _first_use_warned:
        return
    _first_use_warned = True
    if url:
        what = f"{filename} from {url} was given without sha256="
    else:
        what = f"{filename} is not pinned in the catalogue and no digest from its publisher is known"
        what += f" ({reason})" if reason else ""
    warnings.warn(
        f"{what}: it is checked against the digest of its first download (sha256 {sha256}) only. Pass sha256= to "
        "check it against a digest you trust. (Said once per process.)",
        UnpinnedCheckpointWarning,
        stacklevel=_outside_caller(),
    )
