"""The published checkpoints as saved-model folders for the Hugging Face Hub (``resnest-zoo export --hub-folder``).

Each folder is what :meth:`~resnest_zoo.Segmentor.save_pretrained` writes for a model of one's own -- float32
``model.safetensors`` (the published tensors, auxiliary head included), ``config.json``, and a model card with the
published mIoU, the training schedule, the class table and links to the original release -- so
:func:`resnest_zoo.from_pretrained` loads it, and uploading it (``hf upload org/name DIR``) makes a Hub repository
that the catalogue can name as the entry's source. The tensors are those of :func:`~resnest_zoo.export`, which
obtains and verifies the checkpoint and checks that it fits the entry; the header of ``model.safetensors`` keeps
the digest of the ``.pth`` it was made from, which ``config.json`` records too.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..catalogue import CheckpointEntry, catalogue, get_entry
from ..hub.format import WEIGHTS_NAME, Origin
from ..hub.save import describe_folder
from ..weights.checkpoint import AUXILIARY_PREFIX
from ..weights.model_file import read_model_metadata
from .safetensors import export

__all__ = ["export_hub_folder", "export_hub_folders"]


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
    """Write the catalogue entry as the folder ``out_dir/<name>`` (``deeplabv3plus_resnest101os8_cityscapes``) and
    return it. ``weights``, ``sha256``, ``cache_dir`` and ``progress`` are :func:`~resnest_zoo.export`'s."""
    entry = get_entry(segmentor, dataset)
    folder = Path(out_dir) / entry.name
    exported = export(entry.segmentor, entry.dataset, folder, weights=weights, sha256=sha256, cache_dir=cache_dir,
                      progress=progress)
    weights_file = exported.replace(folder / WEIGHTS_NAME)
    source_sha256 = read_model_metadata(weights_file)["source_sha256"]
    return describe_folder(folder, entry.config, origin=Origin.of(entry, source_sha256), metrics={"mIoU": entry.miou},
                           auxiliary_head=_has_auxiliary_head(weights_file))


def export_hub_folders(out_dir: str | os.PathLike[str], entries: Iterable[CheckpointEntry] | None = None, *,
                       cache_dir: str | os.PathLike[str] | None = None, progress: bool | None = None) -> list[Path]:
    """:func:`export_hub_folder` for each of ``entries`` (default: all twelve), in catalogue order."""
    return [export_hub_folder(e.segmentor, e.dataset, out_dir, cache_dir=cache_dir, progress=progress)
            for e in (catalogue().values() if entries is None else entries)]


def _has_auxiliary_head(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return any(key.startswith(AUXILIARY_PREFIX) for key in handle.keys())
