"""The models a server holds: how they are named, loaded, described and run.

A model is given as the command line names it -- ``SEGMENTOR/DATASET`` (a catalogue checkpoint, through the cache,
mirror and offline rules of :func:`resnest_zoo.load`), the folder of a saved model, or ``hf:ORG/NAME`` -- or, from
Python, as a loaded model under a name of one's choosing. Names are what the URLs use:
``/v1/models/deeplabv3plus/cityscapes/predict``, ``/v1/models/my-model/predict``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..api import load_model
from ..errors import ConfigurationError
from ..inference.preprocess import keep_ratio_size
from ..naming import HUB_PREFIX, ModelName, parse_model_name

__all__ = ["ModelSource", "ServedModel", "model_sources", "load_source", "NAME_PATTERN"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(/[A-Za-z0-9][A-Za-z0-9_.+-]*)*")
"""What a served model's name may be: URL-safe path segments (``fcn/voc``, ``my-model``, ``org/model``)."""


@dataclass(frozen=True)
class ModelSource:
    """One model to serve: its ``name``, and either its model name (``choice``, :mod:`resnest_zoo.naming`) or the
    loaded model itself (``model``)."""

    name: str
    choice: ModelName | None = None
    model: Any = None

    @property
    def kind(self) -> str:
        """``catalogue``, ``saved`` or ``python`` (a model given loaded)."""
        if self.choice is None:
            return "python"
        return "saved" if self.choice.saved is not None else "catalogue"


def model_sources(models: Iterable[str | os.PathLike[str]] | Mapping[str, Any]) -> list[ModelSource]:
    """The models to serve, named and checked before anything is loaded.

    ``models`` is a list of names as the command line takes them (``deeplabv3plus/cityscapes``, a saved model's
    folder, ``hf:org/name``), or a mapping from the name to serve under to such a name or to a loaded model.
    Raises :class:`~resnest_zoo.UnknownModelError` or :class:`~resnest_zoo.PretrainedNotFoundError` for a name that
    is none of these, and :class:`~resnest_zoo.ConfigurationError` for no models, a name not fit for a URL, or one
    name twice.
    """
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    pairs = list(models.items()) if isinstance(models, Mapping) else [(None, item) for item in models]
    if not pairs:
        raise ConfigurationError("no models to serve: give at least one (e.g. deeplabv3plus/cityscapes)")
    sources = []
    for name, item in pairs:
        if isinstance(item, (str, os.PathLike)):
            choice = parse_model_name(item)
            sources.append(ModelSource(name or _default_name(choice), choice=choice))
        elif name is None:
            raise ConfigurationError(f"a loaded model ({type(item).__name__}) needs a name to be served under: pass "
                                     "a mapping such as {'my-model': model}")
        elif getattr(item, "config", None) is None or not callable(getattr(item, "predict", None)):
            raise ConfigurationError(f"{name!r}: expected a model from resnest_zoo.load or from_pretrained (with "
                                     f"predict() and a config), got {type(item).__name__}")
        else:
            sources.append(ModelSource(name, model=item))
    seen: set[str] = set()
    for source in sources:
        if not isinstance(source.name, str) or not NAME_PATTERN.fullmatch(source.name) \
                or source.name.endswith("/predict"):
            raise ConfigurationError(f"{source.name!r} cannot name a model in a URL: use letters, digits and . _ + - "
                                     "in segments separated by / (for a saved model's folder, rename the folder)")
        if source.name in seen:
            raise ConfigurationError(f"two models are named {source.name!r}: serve each model once (folders of the "
                                     "same name need renaming)")
        seen.add(source.name)
    return sources


def _default_name(choice: ModelName) -> str:
    if choice.saved is None:
        return str(choice)
    if choice.saved.startswith(HUB_PREFIX):
        return choice.saved[len(HUB_PREFIX):]
    return Path(choice.saved).expanduser().resolve().name


def load_source(source: ModelSource, *, device: torch.device | None, backend: str = "torch",
                cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The model of ``source``, ready for inference: loaded (BatchNorm folded, as ``resnest-zoo predict`` does),
    on ``device`` (the torch backend; runtimes run on the CPU), in eval mode."""
    if source.choice is None:
        return source.model
    options: dict[str, Any] = {"cache_dir": cache_dir} if source.choice.saved is None else {}
    if backend != "torch":
        return load_model(source.choice, backend=backend, progress=False, **options)
    return load_model(source.choice, device=device, progress=False, optimize=True, **options)


@dataclass
class ServedModel:
    """A loaded model as the server runs it: ``predict`` options fixed (``dtype``), and its description."""

    source: ModelSource
    model: Any
    dtype: torch.dtype | None = None
    backend: str = "torch"

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def config(self) -> Any:
        return self.model.config

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size of a ``height x width`` image: images of equal input size share batches."""
        return keep_ratio_size(height, width, self.config.preprocessing.resize)

    def run(self, images: list[Any]) -> list[Any]:
        """``model.predict`` of images of one input size, in one call (shared forward passes)."""
        whole = self.config.inference_mode == "whole"  # slide mode batches windows, not images
        return self.model.predict(list(images), dtype=self.dtype, batch_size=len(images) if whole else None)

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` says of the model."""
        config = self.config
        return {
            "name": self.name,
            "source": self.source.kind,
            "segmentor": config.segmentor,
            "dataset": config.dataset,
            "num_classes": config.num_classes,
            "classes": list(config.class_names),
            "palette": [list(colour) for colour in config.palette],
            "resize": list(config.preprocessing.resize),
            "backend": self.backend,
            "device": _device_of(self.model),
            "precision": str(self.dtype or torch.float32).replace("torch.", ""),
            "predict": f"/v1/models/{self.name}/predict",
        }


def _device_of(model: Any) -> str:
    """Where the model's weights are (``cpu`` for a runtime backend, which has none in torch)."""
    parameters = model.parameters() if callable(getattr(model, "parameters", None)) else iter(())
    first = next(iter(parameters), None)
    return str(first.device) if first is not None else "cpu"
