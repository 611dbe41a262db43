"""Checking files against sha256 digests, and the digest records kept for entries not yet pinned.

Trust rules (applied by :mod:`resnest_zoo.sources`):

* a *pin* -- the catalogue's ``sha256`` or one given by the caller -- always decides;
* an entry not yet pinned is checked against a *record*: the digest of its first complete download,
  written as ``<file>.sha256`` (``sha256sum`` format) in the cache folder. Every later read of the file is
  checked against it, so corruption, a replaced upstream file or tampering is caught (trust on first use).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError

__all__ = [
    "FileDigest",
    "UnpinnedCheckpointWarning",
    "sha256_file",
    "verify",
    "check_digest",
    "normalise_sha256",
    "record_path",
    "read_record",
    "write_record",
    "warn_unpinned",
]

CHUNK_SIZE = 1 << 20
RECORD_SUFFIX = ".sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_warned_unpinned: set[str] = set()


class UnpinnedCheckpointWarning(UserWarning):
    """A checkpoint is checked against the digest of its first download only: the catalogue has no pin yet."""


@dataclass(frozen=True)
class FileDigest:
    """The sha256 digest (lowercase hex) and byte size of a file."""

    path: Path
    sha256: str
    size: int

    def __str__(self) -> str:
        return f"{self.sha256}  {self.size}  {self.path}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 digest of a file as lowercase hex, read in 1 MiB chunks (about 1 s per GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | os.PathLike[str]) -> FileDigest:
    """The sha256 digest and size of ``path``: what to put in the catalogue to pin a checkpoint.

    >>> d = verify("fcn_resnest101os8_voc_train.pth")        # doctest: +SKIP
    >>> print(d.sha256, d.size)                               # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot compute the digest of {str(path)!r}: no such file")
    return FileDigest(path=path, sha256=sha256_file(path), size=path.stat().st_size)


def normalise_sha256(value: str, *, what: str = "sha256") -> str:
    """``value`` as 64 lowercase hex digits, or :class:`ValueError` naming what was received."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value.strip().lower()):
        raise ValueError(f"{what} must be 64 hexadecimal digits (a sha256 digest), got {value!r}")
    return value.strip().lower()


def check_digest(path: Path, expected: str, *, found: str | None = None, what: str = "") -> None:
    """Raise :class:`IntegrityError` unless ``path`` has digest ``expected`` (``found`` saves re-hashing)."""
    found = found if found is not None else sha256_file(path)
    if found != expected:
        raise IntegrityError(
            f"{path} failed verification{' against ' + what if what else ''}: sha256 expected {expected}, "
            f"found {found} ({path.stat().st_size} bytes)"
        )


def record_path(path: Path) -> Path:
    """Where the digest record of ``path`` lives: ``<path>.sha256``."""
    return path.with_name(path.name + RECORD_SUFFIX)


def read_record(path: Path) -> str | None:
    """The digest recorded for ``path`` (see the module docstring), or None when there is no record.

    A record that cannot be parsed raises :class:`IntegrityError`: it is never silently replaced.
    """
    record = record_path(path)
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    fields = text.split()
    if not fields or not _HEX64.fullmatch(fields[0]):
        raise IntegrityError(
            f"the digest record {record} is malformed (expected '<sha256>  <file name>', found {text[:100]!r}); "
            "delete it (and the file it describes) to download again"
        )
    return fields[0]


def write_record(path: Path, sha256: str) -> Path:
    """Record ``sha256`` as the digest of ``path``, atomically, in ``sha256sum -c`` format."""
    record = record_path(path)
    temporary = record.with_name(f"{record.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{sha256}  {path.name}\n", encoding="utf-8")
    os.replace(temporary, record)
    return record


def warn_unpinned(filename: str, sha256: str, *, url: str | None = None) -> None:
    """Warn, once per file and process, that a checkpoint is checked only against its first download
    (a catalogue entry without a pin, or a ``weights=`` ``url`` given without ``sha256=``)."""
    key = url or filename
    if key in _warned_unpinned:
        return
    _warned_unpinned.add(key)
    what = f"{filename} from {url} was given without sha256=" if url else f"{filename} is not pinned in the catalogue"
    warnings.warn(
        f"{what}: it is checked against the digest of its first download (sha256 {sha256}), not against a "
        "published one. Pass sha256= to check it against a digest you trust.",
        UnpinnedCheckpointWarning,
        stacklevel=3,
    )
