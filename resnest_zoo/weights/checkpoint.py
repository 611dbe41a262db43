"""Reading checkpoint files: the model tensors a file holds, read without running any of its code.

Accepted layouts (all found in the wild for these models):

* the sssegmentation training file: ``{"model": state_dict, "epoch": ..., "optimizer": ...}``;
* the file cleaned for publishing: ``{"model": state_dict}``;
* ``{"state_dict": state_dict}`` and a bare state dict;
* keys prefixed with ``module.`` (saved from ``DistributedDataParallel``);
* safetensors files holding the state dict.

``.pth`` files are always unpickled with ``torch.load(weights_only=True)``: a file that would import or call
anything is refused (:class:`UnsafeCheckpointError`) before any of its code runs. Zip-format files are
memory-mapped, so the optimizer state of a training file is never read into memory. A file that is none of
these (an HTML error page, random bytes, an empty or truncated file) raises :class:`CheckpointFormatError`
saying what it holds. Whether the tensors fit a model is :mod:`resnest_zoo.models.strict`'s question.
"""
from __future__ import annotations

import os
import pickle
import re
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
    if len(head) < 9 or head[8:9] != b"{":
        return False
    header_length = int.from_bytes(head[:8], "little")
    return 0 < header_length <= os.path.getsize(path) - 8


def read_state_dict(path: str | os.PathLike[str], *, source: str | None = None) -> dict[str, torch.Tensor]:
    """The model tensors held by a checkpoint file, on the CPU, with any ``module.`` prefix removed.

    ``source`` names the file in error messages (default: its path).
    """
    path = Path(path)
    name = source or str(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".pth", ".pt", ".bin", ".safetensors"))[:5]
        raise CheckpointFormatError(f"{name} is a folder, not a checkpoint file: pass the file itself"
                                    + (f" (checkpoint files in it: {', '.join(inside)})" if inside else ""))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {name!r} does not exist")
    if is_safetensors_file(path):
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointFormatError(f"{name} looks like a safetensors file but could not be read: {exc}") from exc
        # safetensors leaves tensors at their offsets in the file, not 64-byte aligned, and oneDNN runs other code
        # paths on unaligned weights (logits differing in the 7th digit): aligned, a model computes the same
        # whichever file it was read from
        return extract_state_dict({key: tensor.clone() if tensor.data_ptr() % 64 else tensor
                                   for key, tensor in tensors.items()}, source=name)
    return extract_state_dict(_torch_load_safely(path, name), source=name)


def _torch_load_safely(path: Path, name: str) -> Any:
    with open(path, "rb") as handle:
        head = handle.read(64)
    zipped = head.startswith(b"PK\x03\x04")  # the format of torch.save since 1.6
    if not zipped and not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise CheckpointFormatError(f"{name} is not a readable PyTorch checkpoint or safetensors file: "
                                    f"{_describe_bytes(head, path.stat().st_size)}, where a PyTorch file starts as a "
                                    "zip archive ('PK') or a pickle (0x80) and a safetensors file with its header")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global:[^\n]*?(?= was not an allowed global|\n|$)", str(exc))
        if refused is None:  # not a call the safe unpickler refused: damaged or not a torch file
            raise _format_error(name, exc) from None
        raise UnsafeCheckpointError(
            f"refused to load {name}: unpickling it would import or call code outside plain tensors and "
            f"containers ({refused.group(0).strip()}). Nothing from the file was executed. Checkpoints published "
            "for these models hold tensors only; get the file from the catalogue URL, or convert a trusted file "
            "with `resnest-zoo export`."
        ) from None
    except Exception as exc:  # torch raises many types for damaged files; all mean the same to the user
        raise _format_error(name, exc) from exc


def _describe_bytes(head: bytes, size: int) -> str:
    if size == 0:
        return "the file is empty (0 bytes)"
    text = head[:40].decode("utf-8", errors="replace")
    if text.isprintable():
        return f"it holds text ({size} bytes), starting {text!r}"
    return f"its {size} bytes start with {head[:8].hex(' ')}"


def _format_error(name: str, exc: BaseException) -> CheckpointFormatError:
    text = str(exc)
    stopped = re.search(r"Unsupported operand[^\n]*", text)
    if stopped is not None:  # a pickle, but not one torch.save wrote
        return CheckpointFormatError(f"{name} is not a readable PyTorch checkpoint: a pickle, but not one torch.save "
                                     f"wrote, or a damaged one (the safe unpickler stopped at: "
                                     f"{stopped.group(0).strip()}).")
    detail = text.strip().split(". ")[0] if text.strip() else "no detail"
    return CheckpointFormatError(f"{name} is truncated or corrupted: it starts as a PyTorch file, but reading it "
                                 f"failed ({type(exc).__name__}: {detail}).")


def extract_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the model state dict inside a loaded checkpoint object (see the module docstring for layouts)."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{source} holds a {type(obj).__name__}, expected a dict of tensors or {{'model': ...}}")
    where = None
    for key in ("model", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            obj, where = inner, key
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        non_tensor = sorted(f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor))
        counts = f"{len(tensors)} tensors and {len(non_tensor)} other entries: {', '.join(non_tensor[:8])}"
        if where is None:
            found = f"top-level keys are {sorted(map(str, obj))[:8]}" + (f", with {counts}" if obj else "")
        else:
            found = f"its {where!r} entry " + (f"holds {counts}" if obj else "is empty")
        raise CheckpointFormatError(
            f"{source} has no state dict: {found}. Expected a 'model' or 'state_dict' entry holding tensors, or "
            "a flat dict of tensors."
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors
