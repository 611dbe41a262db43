"""``resnest-zoo cache verify``: every cached file checked again, and with ``fix`` the damaged ones deleted.

Checkpoints are re-hashed against what they must be (:func:`.obtain.expected`), safetensors copies against the two
digests they record: that of the checkpoint they were made from (it must be the one the checkpoint must have) and that
of their own tensors. Bit-rot, a truncated or hand-edited file is reported, and with ``fix=True`` deleted, so that the
next load gets it again. Temporary files are not checked (``cache list`` shows them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from . import cache
from .cache import CachedFile
from .integrity import sha256_file
from .model_file import MODEL_FILE_FORMAT, read_model_metadata, tensors_digest
from .obtain import Wanted, expected, mismatch

__all__ = ["CheckedFile", "verify_cache"]

Status = Literal["ok", "damaged", "unchecked"]


@dataclass(frozen=True)
class CheckedFile:
    """One cached file checked again: its status, what was found, and whether ``fix`` deleted it."""

    file: CachedFile
    status: Status
    detail: str
    removed: bool = False


def _wanted(file: CachedFile) -> Wanted:
    entry = file.entry
    if entry is None:  # from a weights= URL: only its record says what it must be
        return Wanted(file.path, file.path.name, "")
    return Wanted(cache.checkpoint_path(file.path.parent, entry), entry.filename, entry.url, entry.sha256,
                  "the catalogue's pin", entry.size, entry)


def _check_checkpoint(file: CachedFile) -> tuple[Status, str]:
    known = expected(_wanted(file))
    if known.sha256 is None and known.size is None:
        return "unchecked", "no pin, publisher's digest or record to check it against (it is checked when next used)"
    found = sha256_file(file.path)
    problem = mismatch(found, file.path.stat().st_size, known)
    if problem is not None:
        return "damaged", problem
    return "ok", f"sha256 {found}" + (f" ({known.digest_from})" if known.digest_from else "")


def _check_copy(file: CachedFile) -> tuple[Status, str]:
    from safetensors import SafetensorError, safe_open

    source = expected(_wanted(file)).sha256
    try:
        metadata = read_model_metadata(file.path)
        if metadata.get("resnest_zoo") != MODEL_FILE_FORMAT:
            return "damaged", f"not a copy written by resnest_zoo (header format {metadata.get('resnest_zoo')!r})"
        if metadata.get("source_sha256") != source:
            must_have = source or "unknown: no pin, publisher's digest or record"
            return "damaged", (f"made from another file (sha256 {metadata.get('source_sha256')}) than the one the "
                               f"entry must have ({must_have}); loads ignore it")
        with safe_open(str(file.path), framework="pt") as handle:
            found = tensors_digest({key: handle.get_tensor(key) for key in handle.keys()})
    except (SafetensorError, OSError, ValueError) as exc:
        return "damaged", f"unreadable ({type(exc).__name__}: {exc})"
    if found != metadata.get("tensors_sha256"):
        return "damaged", (f"its tensors changed since it was written (their sha256 is {found}, recorded "
                           f"{metadata.get('tensors_sha256')})")
    return "ok", f"tensors sha256 {found}, made from sha256 {source}"


def verify_cache(cache_dir: str | os.PathLike[str] | None = None, *, fix: bool = False) -> list[CheckedFile]:
    """Check every cached checkpoint and safetensors copy again (see the module docstring); with ``fix``, delete the
    damaged ones. Returns one :class:`CheckedFile` per file, in :func:`.cache.cached_files` order."""
    results = []
    for file in cache.cached_files(cache_dir):
        if file.kind in ("checkpoint", "safetensors"):
            status, detail = (_check_checkpoint if file.kind == "checkpoint" else _check_copy)(file)
            removed = False
            if fix and status == "damaged":
                with cache.lock(_wanted(file).target):
                    removed = bool(cache.remove([file.path]))
            results.append(CheckedFile(file, status, detail, removed))
    return results
