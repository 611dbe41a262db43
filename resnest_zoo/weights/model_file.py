"""Model-only safetensors files (the fast-reload copy kept in the cache, the files ``export`` writes): the model's
tensors alone, their header recording the digest of the ``.pth`` they came from (``source_sha256``) and of the tensors
themselves (``tensors_sha256``). Loads use the copy only when ``source_sha256`` is the digest the checkpoint must have;
its bytes are not re-hashed on each load (that would cost most of what it saves): ``resnest-zoo cache verify`` does it.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..catalogue import CheckpointEntry
from ..devices import precision_name
from ..files import atomic_write
from ..options import PRECISIONS
from . import cache
from .checkpoint import read_state_dict

__all__ = ["MODEL_FILE_FORMAT", "write_model_file", "read_model_metadata", "source_digest", "tensors_digest",
           "read_fast_copy", "keep_fast_copy"]

MODEL_FILE_FORMAT = "model/1"


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the tensors' names, dtypes, shapes and bytes, in name order: the same whatever the file layout."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def write_model_file(state_dict: Mapping[str, torch.Tensor], path: Path, *, entry: CheckpointEntry,
                     source_sha256: str, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``state_dict`` as safetensors at ``path`` (atomically), floating tensors cast to ``dtype``."""
    from safetensors.torch import save_file

    if precision_name(dtype) not in PRECISIONS:
        raise ValueError(f"dtype must be one of torch.{', torch.'.join(PRECISIONS)}, got {dtype}")
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu")
        tensor = (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()
        if tensor.untyped_storage().data_ptr() in seen:  # safetensors refuses tensors sharing memory
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    metadata = {"format": "pt", "resnest_zoo": MODEL_FILE_FORMAT, "source_sha256": source_sha256,
                "tensors_sha256": tensors_digest(tensors), "source_file": entry.filename, "source_url": entry.url,
                "segmentor": entry.segmentor, "dataset": entry.dataset, "num_classes": str(entry.num_classes),
                "dtype": precision_name(dtype)}
    with atomic_write(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def read_model_metadata(path: Path) -> dict[str, str]:
    """The header metadata of a safetensors file (reads the header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def source_digest(path: Path) -> str | None:
    """The digest of the checkpoint a model-only copy records it was made from (None: unreadable, or none recorded)."""
    from safetensors import SafetensorError

    try:
        return read_model_metadata(path).get("source_sha256")
    except (SafetensorError, OSError, ValueError):
        return None


def read_fast_copy(folder: Path, entry: CheckpointEntry,
                   source_sha256: str) -> tuple[dict[str, torch.Tensor], Path] | None:
    """The tensors of ``entry``'s fast-reload copy and its path, if it was made from the checkpoint with digest
    ``source_sha256``; else None. An unreadable copy is deleted with a warning, so that the next load rebuilds it."""
    from safetensors import SafetensorError

    path = cache.safetensors_path(folder, entry)
    if not path.is_file():
        return None
    try:
        metadata = read_model_metadata(path)
    except (SafetensorError, OSError, ValueError) as exc:
        warnings.warn(f"the cached model copy {path} is unreadable ({exc}); deleting it and rebuilding it from the "
                      "checkpoint", RuntimeWarning, stacklevel=3)
        cache.remove([path])
        return None
    wanted = {"resnest_zoo": MODEL_FILE_FORMAT, "source_sha256": source_sha256, "dtype": "float32"}
    if any(metadata.get(key) != value for key, value in wanted.items()):
        return None
    return read_state_dict(path), path


def keep_fast_copy(state_dict: Mapping[str, torch.Tensor], folder: Path, entry: CheckpointEntry,
                   source_sha256: str, *, source: Path) -> None:
    """Keep the tensors of a verified checkpoint as ``entry``'s fast-reload copy; a folder that cannot be written
    only makes the next load slower, which a warning says."""
    path = cache.safetensors_path(folder, entry)
    try:
        write_model_file(state_dict, path, entry=entry, source_sha256=source_sha256)
    except OSError as exc:
        warnings.warn(f"could not write the fast-reload copy {path} ({exc}); the next load will read {source} again",
                      RuntimeWarning, stacklevel=3)
