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
from ..errors import HubConnectionError, OutputWriteError
from ..files import atomic_write, check_output
from ..weights.integrity import sha256_file
from ..weights.settings import SourceSettings
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

    Raises :class:`~resnest_zoo.OutputWriteError` when the folder cannot be written (read-only, a file of that
    name, a full disk), before anything is written when that can be seen.
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
    check_output(folder, folder=True, what="the saved model", hint="choose a folder you can write to")
    try:
        with atomic_write(folder / WEIGHTS_NAME) as temporary:
            save_file(dict(state_dict), str(temporary), metadata={"format": "pt"})
    except OSError as exc:
        raise _write_error(folder / WEIGHTS_NAME, exc) from None
    return describe_folder(folder, config, origin=origin, metrics=metrics, auxiliary_head=auxiliary_head, repo_id=repo_id)


def _write_error(path: Path, exc: OSError) -> OutputWriteError:
    return OutputWriteError(f"cannot write {path}: {exc.strerror or exc}; choose a folder you can write to (the files "
                            f"already there are complete: each is replaced whole or not at all)")


def describe_folder(folder: Path, config: ModelConfig, *, origin: Origin | None, metrics: dict[str, float],
                    auxiliary_head: bool, repo_id: str | None = None) -> Path:
    """Write ``config.json`` (with the digest of the ``model.safetensors`` already in ``folder``) and ``README.md``."""
    record = SavedModel(model=config, weights_sha256=sha256_file(folder / WEIGHTS_NAME), auxiliary_head=auxiliary_head,
                        origin=origin, metrics=metrics)
    for name, text in ((CONFIG_NAME, record.to_json()), (CARD_NAME, model_card(record, repo_id=repo_id))):
        try:
            with atomic_write(folder / name) as temporary:
                temporary.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _write_error(folder / name, exc) from None
    return folder


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str = "Upload resnest_zoo model",
                create_pr: bool = False, metrics: Mapping[str, float] | None = None) -> str:
    """Save ``model`` (as :func:`save_pretrained`) and upload the folder to the Hub repository ``repo_id``, creating
    the repository when it does not exist. Returns the commit's URL (huggingface_hub's ``CommitInfo``).

    Raises :class:`~resnest_zoo.HubConnectionError` at once, before any work, in offline mode
    (``RESNEST_ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: nothing touches the network), and when the Hub cannot be
    reached. An answer of the Hub's that refuses the upload (a bad token, no permission) is huggingface_hub's own
    ``HfHubHTTPError``, which says why.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.errors import HTTPError as ClientError  # the base error of the HTTP client it uses

    settings = SourceSettings.from_env()  # the one reading of offline mode
    if settings.offline:
        raise HubConnectionError(f"cannot upload to the Hugging Face Hub repository {repo_id}: offline mode "
                                 f"({settings.offline_reason}) never touches the network; unset it to upload, or "
                                 f"save the folder with save_pretrained() and upload it later (hf upload {repo_id} "
                                 f"FOLDER)")
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="resnest_zoo-push-") as folder:
        save_pretrained(model, folder, metrics=metrics, repo_id=repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                     revision=revision, create_pr=create_pr)
        except HfHubHTTPError:
            raise  # the Hub answered, and its error says why it refused
        except (OSError, ClientError) as exc:  # no connection, no answer (OSError: requests, huggingface_hub < 1)
            raise HubConnectionError(f"cannot upload to the Hugging Face Hub repository {repo_id}: the Hub at "
                                     f"{api.endpoint} could not be reached ({type(exc).__name__}: {exc}); check the "
                                     f"network, then try again") from None
