"""Getting a checkpoint's tensors from wherever they are.

This first version reads local files only; downloading, caching and verification come with issue 3.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .catalogue import CheckpointEntry
from .checkpoint import read_state_dict
from .errors import CheckpointNotAvailableError

__all__ = ["checkpoint_state_dict"]


def checkpoint_state_dict(
    entry: CheckpointEntry,
    *,
    weights: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """The model tensors for ``entry`` and a description of where they came from."""
    if weights is None:
        raise CheckpointNotAvailableError(
            f"downloading {entry.filename} is not implemented yet; download {entry.url} yourself and pass weights=PATH"
        )
    path = Path(weights)
    return read_state_dict(path), str(path)
