"""A saved model's ``config.json``: the one owner of its layout, its format version and the files beside it.

A saved model is a folder (or a Hugging Face Hub repository) holding::

    model.safetensors   the model's tensors, float32, published parameter names (plus the auxiliary head if kept)
    config.json         this record, below
    README.md           the model card (:mod:`resnest_zoo.hub.card`)

``config.json`` (format 1)::

    {
      "library_name": "resnest_zoo",          which package reads it: anything else is refused (ForeignConfigError)
      "format_version": 1,                    a newer one is refused with "upgrade" (ConfigVersionError)
      "library_version": "0.1.0",             the resnest_zoo that wrote it (information only)
      "model": {...},                         the ModelConfig: segmentor, classes, palette, backbone, heads,
                                              test-time preprocessing (ModelConfig.to_dict)
      "weights": {"file": "model.safetensors", "sha256": "<its digest>", "dtype": "float32",
                  "auxiliary_head": true},    checked on every load; whether the file holds the auxiliary head
      "source": {"segmentor": "deeplabv3plus", "dataset": "cityscapes", "file": "<published .pth>",
                 "url": "<its release URL>", "sha256": "<its digest, or null when unknown>"} | null,
      "metrics": {"mIoU": 80.3}               what the author reports, shown on the model card ({} when none)
    }

``source`` is the published checkpoint the weights started from: the same model for an exported catalogue entry
(``model.dataset`` is then its dataset), the start of the fine-tuning for a model with classes of its own
(``model.dataset`` null). Every field is checked when read: :func:`parse_record` raises
:class:`~resnest_zoo.ConfigFormatError` (or its subclasses) saying which field is wrong and what it should be.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..catalogue import DATASET_KEYS, SEGMENTORS, CheckpointEntry, get_entry
from ..config import ModelConfig, check_fields
from ..errors import ConfigFormatError, ConfigVersionError, ForeignConfigError, InvalidClassesError
from ..installation import upgrade_command

__all__ = [
    "LIBRARY_NAME",
    "FORMAT_VERSION",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "Origin",
    "SavedModel",
    "parse_record",
]

LIBRARY_NAME = "resnest_zoo"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
WEIGHTS_DTYPE = "float32"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS = ("library_name", "format_version", "library_version", "model", "weights", "source", "metrics")
_WEIGHTS_KEYS = ("file", "sha256", "dtype", "auxiliary_head")
_SOURCE_KEYS = ("segmentor", "dataset", "file", "url", "sha256")


@dataclass(frozen=True)
class Origin:
    """The published checkpoint a saved model's weights started from (``source`` in ``config.json``)."""

    segmentor: str
    dataset: str
    file: str
    url: str
    sha256: str | None

    @classmethod
    def of(cls, entry: CheckpointEntry, sha256: str | None) -> Origin:
        return cls(entry.segmentor, entry.dataset, entry.filename, entry.url, sha256)

    @property
    def entry(self) -> CheckpointEntry:
        return get_entry(self.segmentor, self.dataset)


@dataclass(frozen=True)
class SavedModel:
    """Everything ``config.json`` records: the model, its weights file's digest, where the weights came from."""

    model: ModelConfig
    weights_sha256: str
    auxiliary_head: bool
    origin: Origin | None
    metrics: dict[str, float] = field(default_factory=dict)
    library_version: str = __version__

    @property
    def is_catalogue_model(self) -> bool:
        """True for a published checkpoint as it is (its own dataset's classes), not a model of one's own."""
        return self.origin is not None and self.model.dataset == self.origin.dataset \
            and self.model == self.origin.entry.config

    def to_json(self) -> str:
        document = {
            "library_name": LIBRARY_NAME,
            "format_version": FORMAT_VERSION,
            "library_version": self.library_version,
            "model": self.model.to_dict(),
            "weights": {"file": WEIGHTS_NAME, "sha256": self.weights_sha256, "dtype": WEIGHTS_DTYPE,
                        "auxiliary_head": self.auxiliary_head},
            "source": None if self.origin is None else {
                "segmentor": self.origin.segmentor, "dataset": self.origin.dataset, "file": self.origin.file,
                "url": self.origin.url, "sha256": self.origin.sha256},
            "metrics": dict(self.metrics),
        }
        text = json.dumps(document, indent=2)
        return re.sub(r"\[\s+([-\d.e]+(?:,\s+[-\d.e]+)*)\s+\]",  # number lists (colours, sizes) on one line
                      lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """``metrics`` as ``{name: finite number}``; ``ValueError`` for anything else."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics must be a mapping such as {{'mIoU': 71.3}}, got {metrics!r}")
    bad = {k: v for k, v in metrics.items() if not isinstance(k, str) or isinstance(v, bool)
           or not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
        raise ValueError(f"metrics must map names to finite numbers, got {bad!r}")
    return {k: float(v) for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------------ reading

def parse_record(text: str, where: str) -> SavedModel:
    """Read a ``config.json``'s text (``where`` names it in errors): foreign files, newer formats and every
    malformed field are refused with a :class:`~resnest_zoo.ConfigFormatError` saying what was found."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigFormatError(f"{where} is not JSON ({exc}); a saved resnest_zoo model's config.json is") from None
    if not isinstance(document, dict):
        raise ConfigFormatError(f"{where} holds a JSON {type(document).__name__}, expected an object")
    _check_library(document, where)
    version = document.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigFormatError(f"{where}: format_version is {version!r}, expected a positive integer "
                                f"({FORMAT_VERSION} for this resnest_zoo)")
    if version > FORMAT_VERSION:
        raise ConfigVersionError(
            f"{where} is in format {version} (written by resnest_zoo {document.get('library_version', '?')}), but this "
            f"resnest_zoo {__version__} reads format {FORMAT_VERSION} and older: upgrade it "
            f"({upgrade_command()}) to load this model")
    try:
        return _parse_fields(document)
    except (ConfigFormatError, InvalidClassesError) as exc:
        raise ConfigFormatError(f"{where}: {exc}") from None


def _check_library(document: dict[str, Any], where: str) -> None:
    library = document.get("library_name")
    if library == LIBRARY_NAME:
        return
    if "transformers_version" in document or "architectures" in document or "model_type" in document:
        found = (f"a transformers config (model_type {document.get('model_type')!r}, architectures "
                 f"{document.get('architectures')!r}): load it with transformers")
    elif library is not None:
        found = f"a config of the library {library!r}: load it with that library"
    else:
        found = f"a config without library_name (keys: {', '.join(sorted(map(str, document))[:8])})"
    raise ForeignConfigError(f"{where} is {found}. A model saved by resnest_zoo has library_name {LIBRARY_NAME!r}.")


def _parse_fields(document: dict[str, Any]) -> SavedModel:
    check_fields("config.json", document, _TOP_KEYS)
    model = ModelConfig.from_dict(document["model"])
    _check_names(model)
    weights = document["weights"]
    check_fields("weights", weights, _WEIGHTS_KEYS)
    if weights["file"] != WEIGHTS_NAME or weights["dtype"] != WEIGHTS_DTYPE:
        raise ConfigFormatError(f"weights.file and weights.dtype must be {WEIGHTS_NAME!r} and {WEIGHTS_DTYPE!r}, got "
                                f"{weights['file']!r} and {weights['dtype']!r}")
    if not isinstance(weights["sha256"], str) or not _SHA256.fullmatch(weights["sha256"]):
        raise ConfigFormatError(f"weights.sha256 must be 64 lowercase hex digits, got {weights['sha256']!r}")
    if not isinstance(weights["auxiliary_head"], bool):
        raise ConfigFormatError(f"weights.auxiliary_head must be true or false, got {weights['auxiliary_head']!r}")
    try:
        metrics = check_metrics(document["metrics"])
    except ValueError as exc:
        raise ConfigFormatError(str(exc)) from None
    return SavedModel(model=model, weights_sha256=weights["sha256"], auxiliary_head=weights["auxiliary_head"],
                      origin=_parse_origin(document["source"]), metrics=metrics,
                      library_version=str(document["library_version"]))


def _parse_origin(source: Any) -> Origin | None:
    if source is None:
        return None
    check_fields("source", source, _SOURCE_KEYS)
    if source["segmentor"] not in SEGMENTORS or source["dataset"] not in DATASET_KEYS:
        raise ConfigFormatError(f"source names {source['segmentor']!r}/{source['dataset']!r}, which is not a catalogue "
                                f"checkpoint (segmentors {SEGMENTORS}, datasets {DATASET_KEYS})")
    if not isinstance(source["file"], str) or not isinstance(source["url"], str):
        raise ConfigFormatError("source.file and source.url must be strings")
    digest = source["sha256"]
    if digest is not None and (not isinstance(digest, str) or not _SHA256.fullmatch(digest)):
        raise ConfigFormatError(f"source.sha256 must be 64 lowercase hex digits or null, got {digest!r}")
    return Origin(source["segmentor"], source["dataset"], source["file"], source["url"], digest)


def _check_names(model: ModelConfig) -> None:
    """The segmentor and dataset are catalogue names (whether the head arguments fit the constructors is for the
    builder to say: :func:`resnest_zoo.models.segmentor.check_buildable`)."""
    if model.segmentor not in SEGMENTORS:
        raise ConfigFormatError(f"model.segmentor is {model.segmentor!r}, expected one of {list(SEGMENTORS)}")
    if model.dataset is not None and model.dataset not in DATASET_KEYS:
        raise ConfigFormatError(f"model.dataset is {model.dataset!r}, expected null or one of {DATASET_KEYS}")
