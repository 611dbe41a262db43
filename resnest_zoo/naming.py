"""How a model is named, the same way everywhere (Python, every command, the server).

A model name is one of:

* ``SEGMENTOR/DATASET``: a published checkpoint of the catalogue, such as ``deeplabv3plus/cityscapes`` (names are
  case-insensitive and the usual aliases work: ``deeplabv3+/ade``);
* the folder of a saved model, as :meth:`~resnest_zoo.Segmentor.save_pretrained` writes it;
* ``hf:ORG/NAME``: a saved model in a Hugging Face Hub repository.

:func:`parse_model_name` reads one (torch-free, so the command line checks names before importing anything
heavy); :func:`resnest_zoo.load_model` loads what it names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .catalogue import get_entry
from .errors import PretrainedNotFoundError, UnknownModelError

__all__ = ["HUB_PREFIX", "MODEL_NAME_HELP", "ModelName", "parse_model_name"]

HUB_PREFIX = "hf:"
"""``hf:org/name`` always means a Hugging Face Hub repository, even where a folder of that name exists."""

MODEL_NAME_HELP = ("SEGMENTOR/DATASET (a catalogue checkpoint, e.g. deeplabv3plus/cityscapes), the folder of a saved "
                   "model, or hf:ORG/NAME (a saved model on the Hugging Face Hub)")
"""What a model name may be, in one line (help texts and error messages)."""


@dataclass(frozen=True)
class ModelName:
    """What a model name means: a catalogue entry (``segmentor`` and ``dataset``, canonical), or a saved model
    (``saved``: its folder or ``hf:org/name``; its dataset is known once it is loaded)."""

    segmentor: str | None = None
    dataset: str | None = None
    saved: str | None = None

    def __str__(self) -> str:
        return self.saved if self.saved is not None else f"{self.segmentor}/{self.dataset}"


def parse_model_name(text: str | os.PathLike[str] | ModelName) -> ModelName:
    """The :class:`ModelName` of ``text`` (see the module docstring).

    Raises :class:`~resnest_zoo.UnknownModelError` for a catalogue name that does not exist (naming the closest
    one) and :class:`~resnest_zoo.PretrainedNotFoundError` for a path to a folder that does not exist.
    """
    if isinstance(text, ModelName):
        return text
    text = os.fspath(text)
    if text.startswith(HUB_PREFIX) or Path(text).expanduser().is_dir():
        return ModelName(saved=text)
    parts = text.split("/")
    if text.startswith((".", "/", "~")) or len(parts) > 2 or (os.sep != "/" and os.sep in text):
        raise PretrainedNotFoundError(f"no folder {text!r}: a saved model is named by its folder, which must exist; "
                                      f"a model name is {MODEL_NAME_HELP}")
    if len(parts) != 2:
        raise UnknownModelError(f"{text!r} names no model: a model name is {MODEL_NAME_HELP}")
    try:
        entry = get_entry(*parts)
    except UnknownModelError as exc:
        raise UnknownModelError(f"{exc} (or, for a saved model, no folder {text!r} exists)") from None
    return ModelName(entry.segmentor, entry.dataset)
