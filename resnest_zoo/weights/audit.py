"""``resnest-zoo cache verify``: checkpoints re-hashed against what they must be (:func:`.obtain.expected`),
safetensors copies against the digests they record (of the checkpoint they were made from, and of their tensors).
Bit-rot, a truncated or edited file is reported and, with ``fix=True``, deleted, so that the next load gets it again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from . import cache
from .cache import CachedFile
from .checkpoint import read_state_dict
from .integrity import sha256_file
from .model_file import MODEL_FILE_FORMAT, read_model_metadata, tensors_digest
from .obtain import Wanted, expected, mismatch
from .sources import entry_file

__all__ = ["CheckedFile", "verify_cache"]

Status = Literal["ok", "damaged", "unchecked"]


@dataclass(frozen=True)
class CheckedFile:
    """One cached file checked again: its status, what was found, and whether ``fix`` deleted it."""

    file: CachedFile
    status: Status
    detail: str
    removed: bool = False


def _wanted(file: CachedFile) -> Wanted:  # (from a weights= URL: only its record says what it must be)
    return Wanted(file.path, "") if file.entry is None else entry_file(file.entry, file.path.parent)


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
    from safetensors import SafetensorError

    source = expected(_wanted(file)).sha256
    try:
        metadata = read_model_metadata(file.path)
        if metadata.get("resnest_zoo") != MODEL_FILE_FORMAT:
            return "damaged", f"not a copy written by resnest_zoo (header format {metadata.get('resnest_zoo')!r})"
        if metadata.get("source_sha256") != source:
            must_have = source or "unknown: no pin, publisher's digest or record"
            return "damaged", (f"made from another file (sha256 {metadata.get('source_sha256')}) than the one the "
                               f"entry must have ({must_have}); loads ignore it")
        found = tensors_digest(read_state_dict(file.path))
    except (SafetensorError, OSError, ValueError) as exc:
        return "damaged", f"unreadable ({type(exc).__name__}: {exc})"
    if found != metadata.get("tensors_sha256"):
        return "damaged", (f"its tensors changed since it was written (their sha256 is {found}, recorded "
                           f"{metadata.get('tensors_sha256')})")
    return "ok", f"tensors sha256 {found}, made from sha256 {source}"


def verify_cache(cache_dir: str | os.PathLike[str] | None = None, *, fix: bool = False) -> list[CheckedFile]:
    """Check every cached checkpoint and safetensors copy again; with ``fix``, delete the damaged ones. One
    :class:`CheckedFile` per file, in :func:`.cache.cached_files` order."""
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
