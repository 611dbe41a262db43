"""Reading checkpoint files: the model tensors a file holds, read without running any of its code.

Layouts: ``{"model": state_dict, ...}`` (sssegmentation's files), ``{"state_dict": ...}``, a bare state dict, keys
prefixed with ``module.`` (DDP), safetensors. ``.pth`` files are read with ``torch.load(weights_only=True)`` only,
memory-mapped: a file that would import or call anything is refused (:class:`UnsafeCheckpointError`, naming what) and
none of its code runs; anything else (an HTML page, random or truncated bytes) raises :class:`CheckpointFormatError`.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointFormatError, UnsafeCheckpointError

__all__ = ["read_state_dict", "extract_state_dict", "is_safetensors_file"]


def is_safetensors_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts like safetensors: an 8-byte little-endian header length, then ``{``."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8


def read_state_dict(path: str | os.PathLike[str], *, source: str | None = None) -> dict[str, torch.Tensor]:
    """The model tensors held by a checkpoint file, on the CPU, with any ``module.`` prefix removed. ``source`` names
    the file in error messages (default: its path)."""
    path = Path(path)
    name = source or str(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".pth", ".pt", ".bin", ".safetensors"))[:5]
        raise CheckpointFormatError(f"{name} is a folder, not a checkpoint file: pass the file itself"
                                    + (f" (checkpoint files in it: {', '.join(inside)})" if inside else ""))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {name!r} does not exist")
    if not is_safetensors_file(path):
        return extract_state_dict(_torch_load_safely(path, name), source=name)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{name} looks like a safetensors file but could not be read: {exc}") from exc
    # The tensors stay memory-mapped where safetensors put them (not copied: a cached load stays fast and light).
    # They are not 64-byte aligned there, and oneDNN takes other code paths on such weights, so logits may differ
    # from those of the same weights read from a .pth in the 7th digit (never the weights themselves).
    return extract_state_dict(tensors, source=name)


def _torch_load_safely(path: Path, name: str) -> Any:
    with open(path, "rb") as handle:
        head = handle.read(64)
    zipped = head.startswith(b"PK\x03\x04")  # the format of torch.save since 1.6
    if not zipped and not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        text, size = head[:40].decode("utf-8", errors="replace"), path.stat().st_size
        holds = ("the file is empty (0 bytes)" if size == 0 else f"it holds text ({size} bytes), starting {text!r}"
                 if text.isprintable() else f"its {size} bytes start with {head[:8].hex(' ')}")
        raise CheckpointFormatError(f"{name} is not a readable PyTorch checkpoint or safetensors file: {holds}, where "
                                    "a PyTorch file starts as a zip archive ('PK') or a pickle (0x80) and a "
                                    "safetensors file with its header")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped and zipfile.is_zipfile(path))
    except Exception as exc:  # torch raises many types for files it cannot read safely: is this one unsafe?
        try:  # (what it would import or call beyond what weights_only allows, read from its pickle's opcodes)
            refused = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path)) if zipped else []
        except (RuntimeError, ValueError, OSError, EOFError):  # too damaged even to be scanned
            refused = []
        if refused:
            raise UnsafeCheckpointError(
                f"refused to load {name}: unpickling it would import or call code outside plain tensors and "
                f"containers ({', '.join(refused)}). Nothing from the file was executed. Checkpoints published for "
                "these models hold tensors only; get the file from the catalogue URL, or convert a trusted file with "
                "`resnest-zoo export`.") from None
        detail = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else "no detail"
        raise CheckpointFormatError(f"{name} is truncated or corrupted, or not a file torch.save wrote: it starts as a "
                                    f"PyTorch file, but reading it safely failed ({type(exc).__name__}: {detail}). "
                                    "Nothing from the file was executed.") from exc


def extract_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the model state dict inside a loaded checkpoint object (see the module docstring for layouts)."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{source} holds a {type(obj).__name__}, expected a dict of tensors or "
                                    "{'model': ...}")
    where = next((key for key in ("model", "state_dict") if isinstance(obj.get(key), Mapping)), None)
    obj = obj[where] if where is not None else obj
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        others = sorted(f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor))
        counts = f"{len(tensors)} tensors and {len(others)} other entries: {', '.join(others[:8])}"
        if where is None:
            found = f"top-level keys are {sorted(map(str, obj))[:8]}" + (f", with {counts}" if obj else "")
        else:
            found = f"its {where!r} entry " + (f"holds {counts}" if obj else "is empty")
        raise CheckpointFormatError(f"{source} has no state dict: {found}. Expected a 'model' or 'state_dict' entry "
                                    "holding tensors, or a flat dict of tensors.")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors
