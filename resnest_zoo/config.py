"""What a model is, as data: architecture, classes and test-time pipeline (:class:`ModelConfig`).

A catalogue entry describes one published checkpoint; its :attr:`~resnest_zoo.catalogue.CheckpointEntry.config`
is the :class:`ModelConfig` the network is built from and that ``predict`` follows. A model of one's own
(new classes, fine-tuned) is the same config with other classes (:meth:`ModelConfig.with_classes`), so
everything downstream -- building, prediction, export -- reads one kind of record.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "BACKBONE_DEPTHS",
    "BackboneConfig",
    "HeadConfig",
    "Preprocessing",
    "ModelConfig",
    "INFERENCE_MODES",
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
        if len(self.class_names) != self.num_classes or len(self.palette) != self.num_classes:
            raise ValueError(f"a model with {self.num_classes} classes needs {self.num_classes} class names and "
                             f"palette colours, got {len(self.class_names)} and {len(self.palette)}")
        if self.inference_mode not in INFERENCE_MODES:
            raise ValueError(f"inference_mode must be one of {INFERENCE_MODES}, got {self.inference_mode!r}")

    def with_classes(self, class_names: Sequence[str], palette: Sequence[Sequence[int]]) -> ModelConfig:
        """The same architecture and pipeline predicting other classes (the classifier changes size)."""
        names = tuple(str(name) for name in class_names)
        colours = tuple((int(r), int(g), int(b)) for r, g, b in palette)
        return replace(self, num_classes=len(names), class_names=names, palette=colours, dataset=None)
