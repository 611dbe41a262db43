"""Save a model as a Hugging Face style folder, and share it: ``save_pretrained``, ``push_to_hub``.

The folder layout and ``config.json`` are :mod:`resnest_zoo.formats.saved_model`'s; the model card is
:mod:`.card`'s; reading a folder back is :mod:`resnest_zoo.weights.saved`'s, loading it
:func:`resnest_zoo.from_pretrained`'s. Uploads go through ``huggingface_hub``'s ``HfApi.upload_folder``. Nothing here imports the
models: a segmentor's ``save_pretrained`` method calls in here, and needs only its tensors and attributes.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .._version import __version__
from ..config import ModelConfig
from ..files import atomic_write
from ..weights.integrity import sha256_file
from .card import model_card
from ..formats.saved_model import CARD_NAME, CONFIG_NAME, LIBRARY_NAME, WEIGHTS_NAME, Origin, SavedModel, check_metrics

__all__ = ["save_pretrained", "push_to_hub", "write_folder", "describe_folder"]


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike[str], *,
                    metrics: Mapping[str, float] | None = None, repo_id: str | None = None) -> Path:
    """Write ``model`` (a :class:`~resnest_zoo.Segmentor`) into ``save_directory`` as ``model.safetensors``
    (float32), ``config.json`` and ``README.md``.

    ``config.json`` holds all :func:`from_pretrained` needs to rebuild and use the model (architecture, classes,
    palette, test-time preprocessing), the weights' sha256 and the published checkpoint they started from;
    ``metrics`` (e.g. ``{"mIoU": 71.3}``) go into it and onto the model card; ``repo_id`` into the card's loading
    instructions. Existing files of those names are replaced (each atomically). Returns the folder.
    """
    if getattr(model, "batchnorm_folded", False):
        raise ValueError("cannot save a model whose BatchNorms were folded by optimize_for_inference(): its tensors no "
                         "longer have the published layout. Save the model before optimizing it.")
    if model.config is None:
        raise ValueError("cannot save a model without its config (classes, palette, preprocessing): build it with "
                         "resnest_zoo.load/build/from_pretrained, or set model.config")
    checked_metrics = check_metrics(metrics)
    state_dict = {key: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).contiguous()
                  for key, value in model.state_dict().items()}
    origin = Origin.of(model.entry, model.source_sha256) if model.entry is not None else None
    return write_folder(save_directory, state_dict, model.config, origin=origin, metrics=checked_metrics,
                        auxiliary_head=hasattr(model, "auxiliary_decoder"), repo_id=repo_id)


def write_folder(folder: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor], config: ModelConfig, *,
                 origin: Origin | None, metrics: dict[str, float], auxiliary_head: bool,
                 repo_id: str | None = None) -> Path:
    """The three files of a saved model from float32 tensors and their config (the model itself is not needed)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_write(folder / WEIGHTS_NAME) as temporary:
        save_file(dict(state_dict), str(temporary), metadata={"format": "pt"})
    return describe_folder(folder, config, origin=origin, metrics=metrics, auxiliary_head=auxiliary_head, repo_id=repo_id)


def describe_folder(folder: Path, config: ModelConfig, *, origin: Origin | None, metrics: dict[str, float],
                    auxiliary_head: bool, repo_id: str | None = None) -> Path:
    """Write ``config.json`` (with the digest of the ``model.safetensors`` already in ``folder``) and ``README.md``."""
    record = SavedModel(model=config, weights_sha256=sha256_file(folder / WEIGHTS_NAME), auxiliary_head=auxiliary_head,
                        origin=origin, metrics=metrics)
    for name, text in ((CONFIG_NAME, record.to_json()), (CARD_NAME, model_card(record, repo_id=repo_id))):
        with atomic_write(folder / name) as temporary:
            temporary.write_text(text, encoding="utf-8")
    return folder


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str = "Upload resnest_zoo model",
                create_pr: bool = False, metrics: Mapping[str, float] | None = None) -> str:
    """Save ``model`` (as :func:`save_pretrained`) and upload the folder to the Hub repository ``repo_id``, creating
    the repository when it does not exist. Returns the commit's URL (huggingface_hub's ``CommitInfo``)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="resnest_zoo-push-") as folder:
        save_pretrained(model, folder, metrics=metrics, repo_id=repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 revision=revision, create_pr=create_pr)
