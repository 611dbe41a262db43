"""Model-only safetensors files: the fast-reload copy kept in the cache, and the files ``export`` writes.

Such a file holds the model's tensors and nothing else (no optimizer state, no pickle), and its header
metadata records where they came from::

    {"format": "pt", "resnest_zoo": "model/1", "source_sha256": <digest of the .pth it was made from>,
     "source_file": <published file name>, "segmentor": ..., "dataset": ..., "num_classes": ..., "dtype": ...}

A cached copy is used only when its ``source_sha256`` equals the digest the checkpoint must have (the pin,
or the record of the first download): a copy made from any other file is stale and ignored. The copy's own
bytes are not re-hashed on each load (that would cost most of what it saves); it is written under a
temporary name and renamed into place, so it is never seen half-written, and safetensors checks its
header and sizes when it is opened.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..catalogue import CheckpointEntry
from .checkpoint import read_state_dict

__all__ = ["MODEL_FILE_FORMAT", "write_model_file", "read_model_metadata", "load_cached_model_file"]

MODEL_FILE_FORMAT = "model/1"
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def write_model_file(
    state_dict: Mapping[str, torch.Tensor],
    path: Path,
    *,
    entry: CheckpointEntry,
    source_sha256: str,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``state_dict`` as safetensors at ``path`` (atomically), floating tensors cast to ``dtype``."""
    from safetensors.torch import save_file

    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPE_NAMES.values())}, got {dtype}")
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        tensor = tensor.contiguous()
        if tensor.untyped_storage().data_ptr() in seen:  # safetensors refuses tensors sharing memory
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    metadata = {
        "format": "pt",
        "resnest_zoo": MODEL_FILE_FORMAT,
        "source_sha256": source_sha256,
        "source_file": entry.filename,
        "source_url": entry.url,
        "segmentor": entry.segmentor,
        "dataset": entry.dataset,
        "num_classes": str(entry.num_classes),
        "dtype": _DTYPE_NAMES[dtype],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def read_model_metadata(path: Path) -> dict[str, str]:
    """The header metadata of a safetensors file (reads the header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_cached_model_file(path: Path, source_sha256: str) -> dict[str, torch.Tensor] | None:
    """The tensors of the fast-reload copy at ``path`` if it was made from a file with digest
    ``source_sha256``; None when there is no copy or it is stale. An unreadable copy is reported
    (warning), deleted and treated as absent, so the next load rebuilds it from the verified checkpoint."""
    if not path.is_file():
        return None
    from safetensors import SafetensorError

    try:
        metadata = read_model_metadata(path)
    except (SafetensorError, OSError, ValueError) as exc:
        warnings.warn(f"the cached model copy {path} is unreadable ({exc}); deleting it and rebuilding it from the "
                      "checkpoint", RuntimeWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        return None
    if metadata.get("resnest_zoo") != MODEL_FILE_FORMAT or metadata.get("source_sha256") != source_sha256:
        return None
    if metadata.get("dtype") != "float32":
        return None
    return read_state_dict(path)
