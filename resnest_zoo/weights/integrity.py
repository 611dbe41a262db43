"""Digests: hashing files, a file's digest as a value, and the warning that a checkpoint is trusted on first use (the
rules of trust are :mod:`.obtain`'s)."""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


__all__ = ["FileDigest", "UnpinnedCheckpointWarning", "hash_file", "sha256_file", "verify", "normalise_sha256"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


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


def hash_file(path: str | os.PathLike[str], *, into: BinaryIO | None = None,
              on_chunk: Callable[[int], Any] | None = None) -> Any:
    """The sha256 (a ``hashlib`` object) of a file read in 1 MiB chunks, each also written to ``into`` and its length
    passed to ``on_chunk`` when given: copying and hashing in one read."""
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


def normalise_sha256(value: str, *, what: str = "sha256") -> str:
    """``value`` as 64 lowercase hex digits, or :class:`ValueError` naming what was received."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value.strip().lower()):
        raise ValueError(f"{what} must be 64 hexadecimal digits (a sha256 digest), got {value!r}")
    return value.strip().lower()
