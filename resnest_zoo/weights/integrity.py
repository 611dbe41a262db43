"""Digests and trust: hashing files, what a file must be (:class:`Expected`), the one size-then-digest check, and the
records of first downloads.

Trust, strongest first (applied by :mod:`.obtain`): a *pin* (the catalogue's ``sha256`` or the caller's) decides;
else the *publisher's* size and digest (:mod:`.release`); else the *record* of the file's first download
(``<file>.sha256``, ``sha256sum`` format), written only once that file passed every check, so a bad first download is
never trusted; every later use is checked against it (trust on first use, said once per process by an
:class:`UnpinnedCheckpointWarning`).
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

from ..distributed import ranks_from_environment
from ..errors import IntegrityError
from ..files import atomic_write
from . import cache

__all__ = ["FileDigest", "Expected", "UnpinnedCheckpointWarning", "hash_file", "sha256_file", "verify", "mismatch",
           "check_digest", "normalise_sha256", "read_record", "write_record", "warn_first_use"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_first_use_warned = False


class UnpinnedCheckpointWarning(UserWarning):
    """A checkpoint is checked against the digest of its first download only; ``reason`` says why no pin or digest
    of its publisher decides."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


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
    """What a file must be: its sha256 and size where known, and where each requirement comes from (for messages).
    ``unpinned`` says why only the record of a first download vouches for it (empty: a pin or the publisher does)."""

    sha256: str | None = None
    digest_from: str = ""
    size: int | None = None
    size_from: str = ""
    unpinned: str = ""


def hash_file(path: str | os.PathLike[str], *, into: BinaryIO | None = None,
              on_chunk: Callable[[int], Any] | None = None) -> Any:
    """The running sha256 (a ``hashlib`` object) of a file read in 1 MiB chunks, each also written to ``into`` and
    its length passed to ``on_chunk`` when given (copying and hashing in one read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
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
    """The sha256 digest and size of ``path``: what to put in the catalogue to pin a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot compute the digest of {str(path)!r}: no such file")
    return FileDigest(path, sha256_file(path), path.stat().st_size)


def mismatch(sha256: str, size: int | None, expected: Expected) -> str | None:
    """Why a file with this digest and size (None: not checked) is not the expected one, size first, or None."""
    if expected.size is not None and size is not None and size != expected.size:
        return f"size mismatch: expected {expected.size} bytes ({expected.size_from}), found {size}"
    if expected.sha256 is not None and sha256 != expected.sha256:
        found = f"{sha256} ({size} bytes)" if size is not None else sha256
        return f"digest mismatch: sha256 expected {expected.sha256} ({expected.digest_from}), found {found}"
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
    """The digest recorded for ``path``, or None without a record; a damaged record raises :class:`IntegrityError`
    (it is never silently replaced)."""
    record = cache.record_path(path)
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    fields = text.split()
    if not fields or not _HEX64.fullmatch(fields[0]):
        raise IntegrityError(f"the digest record {record} is damaged (expected '<sha256>  {path.name}', found "
                             f"{text[:100]!r}): delete {record} and {path}, and the file will be downloaded and checked "
                             "again")
    return fields[0]


def write_record(path: Path, sha256: str) -> None:
    """Record ``sha256`` as the digest of ``path`` (atomically, in ``sha256sum -c`` format)."""
    with atomic_write(cache.record_path(path)) as temporary:
        temporary.write_text(f"{sha256}  {path.name}\n", encoding="utf-8")


def _outside_caller() -> int:
    """The ``stacklevel`` of the first frame outside this package: warnings point at the user's own line."""
    frame, level = sys._getframe(2), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] == __package__.split(".")[0]:
        frame, level = frame.f_back, level + 1
    return level


def warn_first_use(filename: str, reason: str) -> None:
    """Say in one line, once per process and on rank 0 only (under torchrun), that ``filename`` is checked against the
    digest of its first download only; ``reason`` (why no pin or publisher's digest decides) rides on the warning."""
    global _first_use_warned
    if _first_use_warned or not ranks_from_environment().is_main:
        return
    _first_use_warned = True
    message = f"{filename} not pinned: checked against the digest of its first download; pin it with sha256="
    warnings.warn(UnpinnedCheckpointWarning(message, reason), stacklevel=_outside_caller())
