"""What a model is, as data: architecture, classes and test-time pipeline (:class:`ModelConfig`).

A catalogue entry describes one published checkpoint; its :attr:`~resnest_zoo.catalogue.CheckpointEntry.config`
is the :class:`ModelConfig` the network is built from and that ``predict`` follows. A model of one's own
(new classes, fine-tuned) is the same config with other classes (:meth:`ModelConfig.with_classes`), so
everything downstream -- building, prediction, export -- reads one kind of record.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import ConfigFormatError, InvalidClassesError

__all__ = [
    "BACKBONE_DEPTHS",
    "BackboneConfig",
    "HeadConfig",
    "Preprocessing",
    "ModelConfig",
    "INFERENCE_MODES",
    "MIN_CLASSES",
    "new_classes",
    "check_class_names",
    "check_palette",
    "generate_palette",
    "check_fields",
]

# ResNeSt depth -> blocks per stage (Zhang et al., 2020, table 1)
BACKBONE_DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "resnest50": (3, 4, 6, 3),
    "resnest101": (3, 4, 23, 3),
    "resnest200": (3, 24, 36, 3),
    "resnest269": (3, 30, 48, 8),
}
INFERENCE_MODES = ("whole", "slide")


@dataclass(frozen=True)
class BackboneConfig:
    """The ResNeSt backbone: depth (``arch``), output stride, split-attention and stem settings."""

    arch: str = "resnest101"
    output_stride: int = 8
    radix: int = 2
    groups: int = 1
    reduction_factor: int = 4
    stem_channels: int = 128
    contract_dilation: bool = True

    @property
    def blocks_per_stage(self) -> tuple[int, int, int, int]:
        return BACKBONE_DEPTHS[self.arch]

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch, "output_stride": self.output_stride, "radix": self.radix, "groups": self.groups,
            "reduction_factor": self.reduction_factor, "stem_channels": self.stem_channels,
            "contract_dilation": self.contract_dilation,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BackboneConfig:
        """The inverse of :meth:`to_dict`, checked; :class:`~resnest_zoo.ConfigFormatError` says what is wrong."""
        check_fields("backbone", values, [f.name for f in fields(cls)])
        if values["arch"] not in BACKBONE_DEPTHS:
            raise ConfigFormatError(f"backbone.arch is {values['arch']!r}, expected one of {sorted(BACKBONE_DEPTHS)}")
        for key in ("output_stride", "radix", "groups", "reduction_factor", "stem_channels"):
            _positive_int(f"backbone.{key}", values[key])
        if not isinstance(values["contract_dilation"], bool):
            raise ConfigFormatError(f"backbone.contract_dilation must be true or false, got {values['contract_dilation']!r}")
        return cls(**values)


@dataclass(frozen=True)
class HeadConfig:
    """Keyword arguments of a head's constructor (channels, pool scales, dilations, dropout), immutable."""

    items: tuple[tuple[str, Any], ...]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HeadConfig:
        return cls(tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in values.items()))

    def kwargs(self) -> dict[str, Any]:
        """The arguments, ready for the head's constructor."""
        return dict(self.items)

    def to_dict(self) -> dict[str, Any]:
        """The arguments as JSON values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.items}


@dataclass(frozen=True)
class Preprocessing:
    """The reference test-time pipeline: keep-ratio bilinear resize to ``resize`` (long side, short side),
    then per-channel ``(pixel - mean) / std`` on RGB values in 0-255."""

    resize: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"resize": list(self.resize), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`, checked; :class:`~resnest_zoo.ConfigFormatError` says what is wrong."""
        check_fields("preprocessing", values, ["resize", "mean", "std"])
        resize = _numbers("preprocessing.resize", values["resize"], 2, int)  # positive: checked there
        mean = _numbers("preprocessing.mean", values["mean"], 3, float)
        std = _numbers("preprocessing.std", values["std"], 3, float)
        if min(std) <= 0:
            raise ConfigFormatError(f"preprocessing.std must be 3 positive numbers, got {values['std']!r}")
        return cls(resize=resize, mean=mean, std=std)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a segmentor and use it: the record ``build`` and ``predict`` read.

    ``dataset`` is the catalogue dataset whose classes the model predicts, or ``None`` for a model with
    classes of its own (then ``class_names`` and ``palette`` are its own).
    """

    segmentor: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    backbone: BackboneConfig
    head: HeadConfig
    auxiliary_head: HeadConfig
    preprocessing: Preprocessing
    crop_size: tuple[int, int]
    inference_mode: str = "whole"
    dataset: str | None = None

    def __post_init__(self) -> None:
        check_class_names(self.class_names, _check_count(self.num_classes, MIN_CLASSES))
        check_palette(self.palette, self.num_classes)
        if self.inference_mode not in INFERENCE_MODES:
            raise ValueError(f"inference_mode must be one of {INFERENCE_MODES}, got {self.inference_mode!r}")

    def with_classes(self, class_names: Sequence[str], palette: Sequence[Sequence[int]]) -> ModelConfig:
        """The same architecture and pipeline predicting other classes (the classifier changes size)."""
        names = check_class_names(class_names)
        return replace(self, num_classes=len(names), class_names=names, palette=check_palette(palette, len(names)),
                       dataset=None)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON values (what a saved model's ``config.json`` holds under ``"model"``)."""
        return {
            "segmentor": self.segmentor, "num_classes": self.num_classes, "class_names": list(self.class_names),
            "palette": [list(colour) for colour in self.palette], "backbone": self.backbone.to_dict(),
            "head": self.head.to_dict(), "auxiliary_head": self.auxiliary_head.to_dict(),
            "preprocessing": self.preprocessing.to_dict(), "crop_size": list(self.crop_size),
            "inference_mode": self.inference_mode, "dataset": self.dataset,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """The inverse of :meth:`to_dict`, checked field by field.

        Raises :class:`~resnest_zoo.ConfigFormatError` for a missing, unknown or ill-typed field and
        :class:`~resnest_zoo.InvalidClassesError` for class names or colours that do not fit ``num_classes``.
        Whether ``segmentor`` and the head arguments name a buildable model is for the builder to say.
        """
        check_fields("model", values, [f.name for f in fields(cls)])
        for key in ("segmentor", "inference_mode"):
            if not isinstance(values[key], str):
                raise ConfigFormatError(f"{key} must be a string, got {values[key]!r}")
        if values["dataset"] is not None and not isinstance(values["dataset"], str):
            raise ConfigFormatError(f"dataset must be a string or null, got {values['dataset']!r}")
        for key in ("head", "auxiliary_head", "backbone", "preprocessing"):
            if not isinstance(values[key], Mapping):
                raise ConfigFormatError(f"{key} must be an object, got {values[key]!r}")
        if not isinstance(values["class_names"], list) or not isinstance(values["palette"], list):
            raise ConfigFormatError("class_names and palette must be lists")
        return cls(
            segmentor=values["segmentor"],
            num_classes=_check_count(values["num_classes"]),
            class_names=tuple(values["class_names"]),
            palette=check_palette(values["palette"], len(values["class_names"])),
            backbone=BackboneConfig.from_dict(values["backbone"]),
            head=HeadConfig.from_dict(values["head"]),
            auxiliary_head=HeadConfig.from_dict(values["auxiliary_head"]),
            preprocessing=Preprocessing.from_dict(values["preprocessing"]),
            crop_size=_numbers("crop_size", values["crop_size"], 2, int),  # type: ignore[arg-type]
            inference_mode=values["inference_mode"],
            dataset=values["dataset"],
        )


# ------------------------------------------------------------------------------------------- classes

MIN_CLASSES = 2
"""The fewest classes a model can have: a softmax over one class is always 1, its cross-entropy always 0, and
nothing can be learnt; a single kind of object is two classes, background and object."""


def _check_count(num_classes: Any, minimum: int = 1) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise InvalidClassesError(
            f"num_classes must be a positive integer, got {num_classes!r} ({type(num_classes).__name__})")
    if num_classes < minimum:
        raise _too_few(int(num_classes))
    return int(num_classes)


def _too_few(count: int) -> InvalidClassesError:
    return InvalidClassesError(
        f"a model needs at least {MIN_CLASSES} classes, got {count}: with one class the softmax is always 1 and the "
        f"loss always 0, so nothing can be learnt; for one kind of object use 2 classes, background and object "
        f"(num_classes=2, class_names=['background', 'object'])")


def check_class_names(class_names: Any, num_classes: int | None = None) -> tuple[str, ...]:
    """``class_names`` as a tuple, checked: non-empty distinct strings, ``num_classes`` of them when given."""
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, (Sequence, np.ndarray)):
        raise InvalidClassesError(f"class_names must be a list of strings, one per class, got {class_names!r}")
    names = tuple(class_names)
    bad = [name for name in names if not isinstance(name, str) or not name.strip()]
    if bad:
        raise InvalidClassesError(f"class_names must be non-empty strings, got {bad[0]!r} among {len(names)} names")
    if num_classes is not None and len(names) != num_classes:
        raise InvalidClassesError(f"class_names has {len(names)} names but num_classes is {num_classes}: "
                                  "give one name per class, in the order of the model's outputs")
    if not names:
        raise InvalidClassesError("class_names is empty: a model needs at least one class")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidClassesError(f"class_names must be distinct, but {', '.join(map(repr, repeated))} appear more than once")
    return names


def check_palette(palette: Any, num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """``palette`` as RGB tuples, checked: ``(num_classes, 3)`` integers in 0-255 (a list of triples or an array)."""
    try:
        colours = np.asarray(palette)
    except (TypeError, ValueError):  # ragged nesting: numpy cannot make an array of it
        colours = np.asarray(palette, dtype=object)
    if colours.dtype == object or colours.ndim != 2 or colours.shape != (num_classes, 3):
        shape = colours.shape if colours.dtype != object else f"{len(palette)} colours of uneven length"
        raise InvalidClassesError(f"palette must be {num_classes} RGB colours (shape ({num_classes}, 3)) for "
                                  f"{num_classes} classes, got {shape}")
    if not (np.issubdtype(colours.dtype, np.integer) and colours.dtype != np.bool_):
        raise InvalidClassesError(f"palette values must be integers 0-255, got {colours.dtype} values such as "
                                  f"{colours.reshape(-1)[0]!r} (scale 0-1 colours by 255)")
    outside = np.argwhere((colours < 0) | (colours > 255))
    if len(outside):
        row, column = outside[0]
        raise InvalidClassesError(f"palette values must be in 0-255, got {int(colours[row, column])} "
                                  f"(class {row}, channel {'RGB'[column]})")
    return tuple((int(r), int(g), int(b)) for r, g, b in colours.tolist())


def generate_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colours for ``num_classes`` classes: the PASCAL VOC colour map (class 0 black), which spreads the
    bits of the class index over the three channels and so never repeats a colour below 2**24 classes."""
    colours = []
    for index in range(_check_count(num_classes)):
        r = g = b = 0
        for bit in range(8):
            r |= ((index >> (3 * bit)) & 1) << (7 - bit)
            g |= ((index >> (3 * bit + 1)) & 1) << (7 - bit)
            b |= ((index >> (3 * bit + 2)) & 1) << (7 - bit)
        colours.append((r, g, b))
    return tuple(colours)


def new_classes(num_classes: int | None = None, class_names: Sequence[str] | None = None,
                palette: Any = None) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """Checked class names and colours for a model with classes of its own.

    ``num_classes`` alone names them ``class_0``, ``class_1`` ...; ``class_names`` alone sets the count (at least
    :data:`MIN_CLASSES`); the palette defaults to :func:`generate_palette`. Raises
    :class:`~resnest_zoo.InvalidClassesError`.
    """
    if num_classes is None and class_names is None:
        raise InvalidClassesError("new classes need num_classes or class_names (or both), got neither")
    count = None if num_classes is None else _check_count(num_classes, MIN_CLASSES)
    if class_names is None:
        names = tuple(f"class_{index}" for index in range(count or 0))
    else:
        names = check_class_names(class_names, count)
        if len(names) < MIN_CLASSES:
            raise _too_few(len(names))
    colours = generate_palette(len(names)) if palette is None else check_palette(palette, len(names))
    return names, colours


# ------------------------------------------------------------------------------------------- JSON fields

def check_fields(what: str, values: Any, keys: Sequence[str]) -> None:
    """:class:`~resnest_zoo.ConfigFormatError` unless ``values`` is a JSON object with exactly the fields ``keys``."""
    if not isinstance(values, Mapping):
        raise ConfigFormatError(f"{what} must be an object, got {values!r}")
    missing, unknown = sorted(set(keys) - set(values)), sorted(set(values) - set(keys))
    if missing or unknown:
        raise ConfigFormatError(f"{what} has missing field(s) {missing} and unknown field(s) {unknown}; "
                                f"expected exactly {sorted(keys)}")


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigFormatError(f"{what} must be a positive integer, got {value!r}")
    return value


def _numbers(what: str, values: Any, length: int, kind: type) -> tuple[Any, ...]:
    """``length`` numbers of ``kind`` (int, or float which also takes ints), as a tuple."""
    accepted = (int,) if kind is int else (int, float)
    if not isinstance(values, list) or len(values) != length or \
            any(isinstance(v, bool) or not isinstance(v, accepted) for v in values):
        raise ConfigFormatError(f"{what} must be a list of {length} {kind.__name__}s, got {values!r}")
    if kind is int:
        for value in values:
            _positive_int(what, value)
    return tuple(kind(v) for v in values)
