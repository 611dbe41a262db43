"""Model-only safetensors files of a checkpoint, for publishing on a model hub (``resnest-zoo export``)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..catalogue import get_entry
from ..weights.checkpoint import check_fits, read_state_dict
from ..weights.integrity import check_digest, normalise_sha256, verify
from ..weights.model_file import write_model_file
from ..weights.sources import download_entry, download_url, is_url

__all__ = ["export"]

_EXPORT_SUFFIX = {torch.float32: "", torch.float16: ".fp16", torch.bfloat16: ".bf16"}


def export(
    segmentor: str,
    dataset: str,
    out_dir: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    weights: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> Path:
    """Write the model tensors of a checkpoint (no optimizer state) as a safetensors file in ``out_dir``.

    The file is named after the published one (``fcn_resnest101os8_voc_train.safetensors``; ``.fp16`` /
    ``.bf16`` before the suffix for those dtypes), floating tensors are cast to ``dtype``, and the header
    metadata records the source file's sha256, name and URL and the entry. The tensors are checked to fit
    the entry's architecture first. ``weights`` exports another file (path or URL) instead of the catalogue's.
    """
    if dtype not in _EXPORT_SUFFIX:
        raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    entry = get_entry(segmentor, dataset)
    sha256 = normalise_sha256(sha256) if sha256 is not None else None
    if weights is None:
        source = download_entry(entry, cache_dir=cache_dir, progress=progress, sha256=sha256)
    elif is_url(os.fspath(weights)):
        source = download_url(os.fspath(weights), cache_dir=cache_dir, progress=progress, sha256=sha256, entry=entry)
    else:
        source = verify(weights)
        if sha256 is not None:
            check_digest(source.path, sha256, found=source.sha256, what="sha256=")
    state_dict = read_state_dict(source.path)
    check_fits(entry, state_dict, str(source.path))
    name = Path(entry.filename).stem + _EXPORT_SUFFIX[dtype] + ".safetensors"
    return write_model_file(state_dict, Path(out_dir) / name, entry=entry, source_sha256=source.sha256, dtype=dtype)
