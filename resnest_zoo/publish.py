"""Files of the published checkpoints to publish elsewhere: model-only safetensors (:func:`export`) and saved-model
folders for the Hugging Face Hub (:func:`export_hub_folder`).

Both start from the checkpoint as :func:`resnest_zoo.load` would use it (:func:`resnest_zoo.weights.sources.resolve`:
the catalogue's file, a URL or a local path, verified), check that its tensors fit the entry
(:func:`resnest_zoo.models.strict.check_fits`), and record the sha256 of the ``.pth`` they were made from. The
destination is checked before anything is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import torch

from .catalogue import CheckpointEntry, get_entry
from .devices import precision_name
from .files import check_output
from .formats.saved_model import WEIGHTS_NAME, Origin
from .hub.save import describe_folder
from .models.strict import AUXILIARY_PREFIX, check_fits, fits
from .options import PRECISIONS
from .weights.model_file import write_model_file
from .weights.sources import resolve

__all__ = ["export", "export_hub_folder", "FILE_TAGS"]

FILE_TAGS = {"float32": "", "float16": ".fp16", "bfloat16": ".bf16"}
"""What :func:`export` puts before ``.safetensors`` for each precision."""


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
    if precision_name(dtype) not in PRECISIONS:
        raise ValueError(f"dtype must be torch.{', torch.'.join(PRECISIONS)}, got {dtype}")
    entry = get_entry(segmentor, dataset)
    check_output(out_dir, folder=True, hint="choose a folder you can write to")
    name = Path(entry.filename).stem + FILE_TAGS[precision_name(dtype)] + ".safetensors"
    return _write(entry, Path(out_dir) / name, dtype=dtype, weights=weights, sha256=sha256, cache_dir=cache_dir,
                  progress=progress)[0]


def export_hub_folder(
    segmentor: str,
    dataset: str,
    out_dir: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> Path:
    """Write a published checkpoint as the saved-model folder ``out_dir/<name>`` (e.g.
    ``out_dir/deeplabv3plus_resnest101os8_cityscapes``) and return it.

    The folder is what :meth:`~resnest_zoo.Segmentor.save_pretrained` writes for a model of one's own -- float32
    ``model.safetensors`` (the published tensors, auxiliary head included), ``config.json``, and a model card with
    the published mIoU, the training schedule, the class table and links to the original release -- so
    :func:`~resnest_zoo.from_pretrained` loads it, and uploading it (``hf upload org/name DIR``) makes a Hub
    repository that the catalogue can name as the entry's source. ``weights``, ``sha256``, ``cache_dir`` and
    ``progress`` are :func:`export`'s.
    """
    entry = get_entry(segmentor, dataset)
    folder = Path(out_dir) / entry.name
    check_output(folder, folder=True, hint="choose a folder you can write to")
    _, source_sha256, auxiliary_head = _write(entry, folder / WEIGHTS_NAME, dtype=torch.float32, weights=weights,
                                              sha256=sha256, cache_dir=cache_dir, progress=progress)
    return describe_folder(folder, entry.config, origin=Origin.of(entry, source_sha256), metrics={"mIoU": entry.miou},
                           auxiliary_head=auxiliary_head)


def _write(entry: CheckpointEntry, path: Path, *, dtype: torch.dtype, weights: str | os.PathLike[str] | None,
           sha256: str | None, cache_dir: str | os.PathLike[str] | None,
           progress: bool | None) -> tuple[Path, str, bool]:
    """The checkpoint's tensors, checked to fit ``entry``, written to ``path``; with its source's sha256 and
    whether it holds the auxiliary head."""
    found = resolve(entry, check=fits(entry), weights=weights, sha256=sha256, cache_dir=cache_dir, progress=progress,
                    digest=True)
    state_dict = found.tensors()
    if found.state_dict is None:  # a local file, or one already in the cache: checked here
        check_fits(entry, state_dict, found.description)
    source_sha256 = cast(str, found.sha256)  # resolve(digest=True) hashes every file
    write_model_file(state_dict, path, entry=entry, source_sha256=source_sha256, dtype=dtype)
    return path, source_sha256, any(key.startswith(AUXILIARY_PREFIX) for key in state_dict)
