"""The catalogue of published checkpoints: one :class:`CheckpointEntry` per (segmentor, dataset).

The records live in ``checkpoints.json`` (shipped inside the package, mirrored at the repository root);
they are validated when read, so a malformed edit fails loudly instead of building a wrong model.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, TypeVar

from .config import INFERENCE_MODES, BackboneConfig, HeadConfig, ModelConfig, Preprocessing, check_fields
from .datasets import DATASETS, DatasetInfo
from .errors import CatalogueError, ConfigFormatError, UnknownModelError

__all__ = [
    "CheckpointEntry",
    "SEGMENTORS",
    "DATASET_KEYS",
    "catalogue",
    "get_entry",
    "resolve_segmentor",
    "resolve_dataset",
]

T = TypeVar("T")

FORMAT_VERSION = 2
SEGMENTORS = ("fcn", "pspnet", "deeplabv3", "deeplabv3plus")
DATASET_KEYS = ("voc", "ade20k", "cityscapes")

SEGMENTOR_TITLES = {"fcn": "FCN", "pspnet": "PSPNet", "deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3+"}

_SEGMENTOR_ALIASES = {
    "fcn": "fcn",
    "pspnet": "pspnet", "psp": "pspnet",
    "deeplabv3": "deeplabv3", "deeplab_v3": "deeplabv3",
    "deeplabv3plus": "deeplabv3plus", "deeplabv3+": "deeplabv3plus", "deeplabv3_plus": "deeplabv3plus",
    "deeplab_v3_plus": "deeplabv3plus", "deeplabv3p": "deeplabv3plus",
}
_DATASET_ALIASES = {
    "voc": "voc", "pascal_voc": "voc", "pascalvoc": "voc", "voc2012": "voc", "vocaug": "voc",
    "ade20k": "ade20k", "ade": "ade20k", "ade_20k": "ade20k",
    "cityscapes": "cityscapes", "city_scapes": "cityscapes",
}


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", name.strip().lower())


def _resolve(kind: str, name: str, aliases: dict[str, str], canonical: tuple[str, ...], example: str) -> str:
    """The canonical key for ``name``, or :class:`UnknownModelError` listing the valid names and the closest one."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be a string such as {example!r}, got {type(name).__name__}")
    normalised = _normalise(name)
    key = aliases.get(normalised)
    if key is None:
        close = difflib.get_close_matches(normalised, list(aliases), n=1, cutoff=0.7)
        hint = f" (did you mean {aliases[close[0]]}?)" if close else ""
        raise UnknownModelError(
            f"unknown {kind} {name!r}{hint}; expected one of {', '.join(canonical)} "
            f"(aliases: {', '.join(sorted(set(aliases) - set(canonical)))})"
        )
    return key


def resolve_segmentor(name: str) -> str:
    """Canonical segmentor key for ``name`` (case-insensitive, aliases such as ``deeplabv3+`` accepted)."""
    return _resolve("segmentor", name, _SEGMENTOR_ALIASES, SEGMENTORS, "deeplabv3plus")


def resolve_dataset(name: str) -> str:
    """Canonical dataset key for ``name`` (case-insensitive; ``ade``, ``pascal_voc`` ... accepted)."""
    return _resolve("dataset", name, _DATASET_ALIASES, DATASET_KEYS, "cityscapes")


@dataclass(frozen=True)
class CheckpointEntry:
    """One published checkpoint: where to get it, how it was trained, and the model it holds (:attr:`config`)."""

    segmentor: str
    dataset: str
    name: str
    backbone: BackboneConfig
    num_classes: int
    train_set: str
    eval_set: str
    crop_size: tuple[int, int]
    schedule: dict[str, Any]
    miou: float
    url: str
    log_url: str
    config_url: str
    filename: str
    sha256: str | None
    size: int | None
    hf_repo: str | None
    preprocessing: Preprocessing
    inference: dict[str, Any]
    head: dict[str, Any]
    auxiliary_head: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.segmentor, self.dataset)

    @property
    def dataset_info(self) -> DatasetInfo:
        return DATASETS[self.dataset]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.dataset_info.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.dataset_info.palette

    @property
    def title(self) -> str:
        return f"{SEGMENTOR_TITLES[self.segmentor]} ResNeSt-101-D8, {self.dataset_info.title}"

    @property
    def hub_name(self) -> str:
        """The torch.hub entry point name, e.g. ``deeplabv3plus_resnest101_cityscapes``."""
        return f"{self.segmentor}_resnest101_{self.dataset}"

    @property
    def config(self) -> ModelConfig:
        """The model this checkpoint holds: what :func:`~resnest_zoo.build` builds and ``predict`` follows."""
        return ModelConfig(
            segmentor=self.segmentor,
            num_classes=self.num_classes,
            class_names=self.class_names,
            palette=self.palette,
            backbone=self.backbone,
            head=HeadConfig.from_dict(self.head),
            auxiliary_head=HeadConfig.from_dict(self.auxiliary_head),
            preprocessing=self.preprocessing,
            crop_size=self.crop_size,
            inference_mode=self.inference["mode"],
            dataset=self.dataset,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as stored in ``checkpoints.json``."""
        record = {name: getattr(self, name) for name in _FIELDS}
        record["crop_size"] = list(self.crop_size)
        record["backbone"] = self.backbone.to_dict()
        record["preprocessing"] = self.preprocessing.to_dict()
        return record


_FIELDS = [f.name for f in fields(CheckpointEntry)]

# field name -> accepted python types (None allowed only where listed)
_SCHEMA: dict[str, tuple[type, ...]] = {
    "segmentor": (str,), "dataset": (str,), "name": (str,), "backbone": (dict,), "num_classes": (int,),
    "train_set": (str,), "eval_set": (str,), "crop_size": (list,), "schedule": (dict,), "miou": (float, int),
    "url": (str,), "log_url": (str,), "config_url": (str,), "filename": (str,),
    "sha256": (str, type(None)), "size": (int, type(None)), "hf_repo": (str, type(None)),
    "preprocessing": (dict,), "inference": (dict,), "head": (dict,), "auxiliary_head": (dict,),
}
_HEAD_KEYS = {
    "fcn": {"in_channels", "feats_channels", "num_convs", "dropout"},
    "pspnet": {"in_channels", "feats_channels", "pool_scales", "dropout"},
    "deeplabv3": {"in_channels", "feats_channels", "dilations", "dropout"},
    "deeplabv3plus": {"in_channels", "feats_channels", "shortcut_channels", "dilations", "dropout"},
}
_AUXILIARY_HEAD_KEYS = {"in_channels", "feats_channels", "dropout"}


def _fail(where: str, problem: str) -> CatalogueError:
    return CatalogueError(f"checkpoints.json, {where}: {problem}")


def _checked(where: str, parse: Callable[..., T], *args: Any) -> T:
    """``parse(*args)`` with a :class:`ConfigFormatError` (what the config module says is wrong) reported as a
    :class:`CatalogueError` naming the record: the config module owns the fields' rules, this one the file."""
    try:
        return parse(*args)
    except ConfigFormatError as exc:
        raise _fail(where, str(exc)) from None


def parse_entry(record: dict[str, Any], where: str = "record") -> CheckpointEntry:
    """Validate one JSON record against the schema and turn it into a :class:`CheckpointEntry`."""
    if not isinstance(record, dict):
        raise _fail(where, f"expected an object, got {type(record).__name__}")
    missing = [k for k in _SCHEMA if k not in record]
    if missing:
        raise _fail(where, f"missing field(s) {missing}")
    unknown = sorted(set(record) - set(_SCHEMA))
    if unknown:
        raise _fail(where, f"unknown field(s) {unknown}; allowed: {sorted(_SCHEMA)}")
    for key, types in _SCHEMA.items():
        value = record[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _fail(where, f"field {key!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
    if record["segmentor"] not in SEGMENTORS:
        raise _fail(where, f"segmentor {record['segmentor']!r} is not one of {SEGMENTORS}")
    if record["dataset"] not in DATASET_KEYS:
        raise _fail(where, f"dataset {record['dataset']!r} is not one of {DATASET_KEYS}")
    expected_classes = DATASETS[record["dataset"]].num_classes
    if record["num_classes"] != expected_classes:
        raise _fail(where, f"num_classes is {record['num_classes']}, but {record['dataset']} has {expected_classes} classes")
    sha = record["sha256"]
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise _fail(where, f"sha256 must be 64 lowercase hex digits or null, got {sha!r}")
    if record["size"] is not None and record["size"] <= 0:
        raise _fail(where, f"size must be a positive byte count or null, got {record['size']}")
    if not record["url"].startswith("https://") or not record["url"].endswith("/" + record["filename"]):
        raise _fail(where, f"url {record['url']!r} must be https and end with the file name {record['filename']!r}")
    crop = record["crop_size"]
    if len(crop) != 2 or not all(isinstance(c, int) and c > 0 for c in crop):
        raise _fail(where, f"crop_size must be two positive ints, got {crop!r}")
    _checked(where, check_fields, "head", record["head"], sorted(_HEAD_KEYS[record["segmentor"]]))
    _checked(where, check_fields, "auxiliary_head", record["auxiliary_head"], sorted(_AUXILIARY_HEAD_KEYS))
    _checked(where, check_fields, "inference", record["inference"], ["mode"])
    if record["inference"]["mode"] not in INFERENCE_MODES:
        raise _fail(where, f"inference.mode must be one of {INFERENCE_MODES}, got {record['inference']['mode']!r}")
    values = dict(record)
    values["backbone"] = _checked(where, BackboneConfig.from_dict, record["backbone"])
    values["crop_size"] = tuple(crop)
    values["preprocessing"] = _checked(where, Preprocessing.from_dict, record["preprocessing"])
    values["miou"] = float(record["miou"])
    return CheckpointEntry(**values)


def parse_catalogue(document: dict[str, Any]) -> dict[tuple[str, str], CheckpointEntry]:
    """Validate a whole ``checkpoints.json`` document; every (segmentor, dataset) must appear exactly once."""
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION \
            or not isinstance(document.get("checkpoints"), list):
        raise CatalogueError(f"checkpoints.json must be an object with format_version {FORMAT_VERSION} and a "
                             "'checkpoints' list")
    entries: dict[tuple[str, str], CheckpointEntry] = {}
    for index, record in enumerate(document["checkpoints"]):
        entry = parse_entry(record, where=f"record {index}")
        if entry.key in entries:
            raise _fail(f"record {index}", f"duplicate entry for {entry.key}")
        entries[entry.key] = entry
    expected = {(s, d) for s in SEGMENTORS for d in DATASET_KEYS}
    if set(entries) != expected:
        raise CatalogueError(f"checkpoints.json lacks entries for {sorted(expected - set(entries))}")
    return entries


@lru_cache(maxsize=1)
def catalogue() -> dict[tuple[str, str], CheckpointEntry]:
    """All twelve entries, keyed by (segmentor, dataset), read once from the packaged ``checkpoints.json``."""
    text = resources.files(__package__).joinpath("checkpoints.json").read_text(encoding="utf-8")
    return parse_catalogue(json.loads(text))


def get_entry(segmentor: str, dataset: str) -> CheckpointEntry:
    """The catalogue entry for a (segmentor, dataset) pair; names are case-insensitive and aliases work."""
    return catalogue()[(resolve_segmentor(segmentor), resolve_dataset(dataset))]
