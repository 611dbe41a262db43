"""What a runtime file (ONNX, OpenVINO IR) says about the model inside: the one owner of its keys and tensor names.

An exported network takes ``images`` and returns ``logits``, exactly ``model(images)``: normalised RGB float32
``(N, 3, H, W)`` in, class logits float32 ``(N, K, H, W)`` at the input size out. Everything else a deployment
needs to turn a photo into a label map without this package travels in the file as string metadata (ONNX
``metadata_props``; OpenVINO ``rt_info`` under ``resnest_zoo``)::

    resnest_zoo       "runtime/1"  -- the format marker: how this package recognises its own files
    segmentor, dataset, backbone, num_classes
    class_names       JSON list, index = class id;   palette  JSON list of [r, g, b]
    mean, std         JSON [r, g, b]: (pixel in 0-255 - mean) / std, RGB order
    resize            JSON [long, short]; resize_rule says how it is applied (keep-ratio, OpenCV bilinear)
    crop_size, inference_mode     the sliding-window crop and the default mode ("whole")
    input, output     the tensors, in words;   batchnorm_folded, input_shape
    source_sha256     sha256 of the checkpoint file the weights came from ("" when unknown)

An INT8 file (:func:`resnest_zoo.deploy.int8.export_openvino_int8`) carries, in addition (:data:`INT8_KEYS`)::

    precision         "int8" (absent: the weights are float32)
    calibration, calibration_size, held_out     what it was calibrated on, in words, and how many images
    label_agreement   % of the held-out images' pixels whose INT8 label is the float32 one
    miou_float32, miou_int8, max_miou_drop      with labelled calibration data: the mIoU (points) of both models
                                                on it and the bound that was asked for ("null" without labels)

:func:`model_metadata` writes them, :func:`parse_metadata` reads them back (refusing files that are not ours) and
:func:`check_same_model` refuses a file of another model than the one asked for.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._version import __version__
from ..config import ModelConfig
from ..errors import RuntimeFileError, RuntimeModelMismatchError
from ..installation import upgrade_command

__all__ = [
    "FORMAT_KEY",
    "RUNTIME_FORMAT",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "METADATA_KEYS",
    "RESIZE_RULE",
    "RuntimeMetadata",
    "INT8_KEYS",
    "INT8",
    "QuantizationReport",
    "model_metadata",
    "parse_metadata",
    "check_same_model",
]

FORMAT_KEY = "resnest_zoo"
RUNTIME_FORMAT = "runtime/1"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
RESIZE_RULE = (
    "keep-ratio resize before inference: scale = min(max(resize) / max(height, width), min(resize) / "
    "min(height, width)), each side int(side * scale + 0.5), bilinear as OpenCV INTER_LINEAR on uint8 RGB; "
    "then (pixel - mean) / std; logits back to the photo's size with one bilinear resize (align_corners=False), "
    "argmax over classes"
)
_INPUT = f"{INPUT_NAME}: float32 N x 3 x H x W, RGB, (pixel in 0-255 - mean) / std"
_OUTPUT = f"{OUTPUT_NAME}: float32 N x num_classes x H x W (at the input size); argmax over axis 1 = class id"

# key -> how its value is read back (json: a JSON document; text: the string itself)
METADATA_KEYS: dict[str, str] = {
    FORMAT_KEY: "text", "resnest_zoo_version": "text", "segmentor": "text", "dataset": "text",
    "backbone": "text", "num_classes": "json", "class_names": "json", "palette": "json", "mean": "json",
    "std": "json", "resize": "json", "resize_rule": "text", "crop_size": "json", "inference_mode": "text",
    "input": "text", "output": "text", "input_shape": "text", "batchnorm_folded": "json",
    "source_sha256": "text",
}

INT8 = "int8"
"""The ``precision`` of a quantized file."""
INT8_KEYS: dict[str, str] = {
    "precision": "text", "calibration": "text", "calibration_size": "json", "held_out": "json",
    "label_agreement": "json", "miou_float32": "json", "miou_int8": "json", "max_miou_drop": "json",
}


@dataclass(frozen=True)
class QuantizationReport:
    """How an INT8 file was made and what it costs in accuracy: what it was calibrated on, the label agreement with
    float32 on held-out images (%), and with labelled data both models' mIoU and the bound (points, 0-100)."""

    calibration: str
    calibration_size: int
    held_out: int
    label_agreement: float
    miou_float32: float | None = None
    miou_int8: float | None = None
    max_miou_drop: float | None = None

    @property
    def miou_drop(self) -> float | None:
        """float32 mIoU minus INT8 mIoU, in points; None without labelled data."""
        return None if self.miou_float32 is None or self.miou_int8 is None else self.miou_float32 - self.miou_int8

    def metadata(self) -> dict[str, str]:
        """The :data:`INT8_KEYS` strings of this report."""
        values = {"precision": INT8, **{key: getattr(self, key) for key in INT8_KEYS if key != "precision"}}
        return {key: value if INT8_KEYS[key] == "text" else json.dumps(value) for key, value in values.items()}

    def __str__(self) -> str:
        lines = [f"calibrated on {self.calibration_size} image(s) of {self.calibration}",
                 f"label agreement with float32: {self.label_agreement:.2f}% of the pixels of {self.held_out} "
                 f"held-out image(s)"]
        if self.miou_drop is not None:
            lines.append(f"mIoU: float32 {self.miou_float32:.2f}, int8 {self.miou_int8:.2f} (drop {self.miou_drop:.2f}"
                         f" points, bound {self.max_miou_drop:g})")
        return "\n".join(lines)


@dataclass(frozen=True)
class RuntimeMetadata:
    """The metadata of a runtime file, parsed (see the module docstring for each field)."""

    segmentor: str
    dataset: str | None
    backbone: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: tuple[int, int]
    crop_size: tuple[int, int]
    inference_mode: str
    input_shape: str
    batchnorm_folded: bool
    source_sha256: str | None
    version: str
    precision: str = "float32"
    quantization: QuantizationReport | None = None


def model_metadata(config: ModelConfig, *, source_sha256: str | None, batchnorm_folded: bool, input_shape: str) -> dict[str, str]:
    """The metadata strings for a network built from ``config`` (every key of :data:`METADATA_KEYS`)."""
    pre = config.preprocessing
    values: dict[str, Any] = {
        FORMAT_KEY: RUNTIME_FORMAT, "resnest_zoo_version": __version__, "segmentor": config.segmentor,
        "dataset": config.dataset or "", "backbone": config.backbone.arch, "num_classes": config.num_classes,
        "class_names": list(config.class_names), "palette": [list(colour) for colour in config.palette],
        "mean": list(pre.mean), "std": list(pre.std), "resize": list(pre.resize), "resize_rule": RESIZE_RULE,
        "crop_size": list(config.crop_size), "inference_mode": config.inference_mode, "input": _INPUT,
        "output": _OUTPUT, "input_shape": input_shape, "batchnorm_folded": batchnorm_folded,
        "source_sha256": source_sha256 or "",
    }
    return {key: value if METADATA_KEYS[key] == "text" else json.dumps(value) for key, value in values.items()}


def parse_metadata(values: Mapping[str, str], *, where: str) -> RuntimeMetadata:
    """Read :func:`model_metadata`'s strings back; :class:`RuntimeFileError` for a file that is not ours."""
    marker = values.get(FORMAT_KEY)
    if marker is None:
        raise RuntimeFileError(
            f"{where} was not written by resnest_zoo: its metadata has no {FORMAT_KEY!r} entry (found "
            f"{sorted(values) or 'none'}); export the model with resnest_zoo.export_onnx / export_openvino or "
            f"`resnest-zoo export SEGMENTOR DATASET --format onnx`")
    if marker != RUNTIME_FORMAT:
        raise RuntimeFileError(f"{where} is in resnest_zoo runtime format {marker!r}, this version reads "
                               f"{RUNTIME_FORMAT!r}; export it again with this version, or upgrade resnest_zoo "
                               f"({upgrade_command()})")
    missing = [key for key in METADATA_KEYS if key not in values]
    if missing:
        raise RuntimeFileError(f"{where} carries the resnest_zoo marker but lacks the metadata {missing}; "
                               f"export it again")
    try:
        read = {key: values[key] if kind == "text" else json.loads(values[key]) for key, kind in METADATA_KEYS.items()}
        return RuntimeMetadata(
            segmentor=read["segmentor"], dataset=read["dataset"] or None, backbone=read["backbone"],
            num_classes=int(read["num_classes"]), class_names=tuple(str(n) for n in read["class_names"]),
            palette=tuple((int(r), int(g), int(b)) for r, g, b in read["palette"]),
            mean=tuple(float(v) for v in read["mean"]), std=tuple(float(v) for v in read["std"]),
            resize=(int(read["resize"][0]), int(read["resize"][1])),
            crop_size=(int(read["crop_size"][0]), int(read["crop_size"][1])),
            inference_mode=read["inference_mode"], input_shape=read["input_shape"],
            batchnorm_folded=bool(read["batchnorm_folded"]), source_sha256=read["source_sha256"] or None,
            version=read["resnest_zoo_version"], **_quantization(values),
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise RuntimeFileError(f"{where}: resnest_zoo metadata that does not parse ({exc}); export it again") from None


def _quantization(values: Mapping[str, str]) -> dict[str, Any]:
    """``precision`` and ``quantization`` of :class:`RuntimeMetadata` (float32 and None for a file without them)."""
    if values.get("precision", "float32") != INT8:
        return {}
    missing = [key for key in INT8_KEYS if key not in values]
    if missing:
        raise ValueError(f"an int8 file without {missing}")
    read = {key: json.loads(values[key]) for key, kind in INT8_KEYS.items() if kind == "json"}
    return {"precision": INT8, "quantization": QuantizationReport(calibration=values["calibration"], **read)}


def check_same_model(metadata: RuntimeMetadata, config: ModelConfig, *, where: str,
                     source_sha256: str | None = None) -> None:
    """Raise :class:`RuntimeModelMismatchError` unless the file holds the model ``config`` describes (same
    segmentor, dataset, classes and preprocessing) and, when ``source_sha256`` is given, made from that checkpoint."""
    pre = config.preprocessing
    expected = {
        "segmentor": config.segmentor, "dataset": config.dataset, "backbone": config.backbone.arch,
        "num_classes": config.num_classes, "class_names": tuple(config.class_names),
        "palette": tuple(tuple(c) for c in config.palette), "mean": tuple(float(v) for v in pre.mean),
        "std": tuple(float(v) for v in pre.std), "resize": tuple(pre.resize),
    }
    differences = [f"{key} is {_short(getattr(metadata, key))}, expected {_short(value)}"
                   for key, value in expected.items() if getattr(metadata, key) != value]
    if source_sha256 is not None and metadata.source_sha256 != source_sha256.lower():
        found = metadata.source_sha256 or "not recorded"
        differences.append(f"source checkpoint sha256 is {found}, expected {source_sha256.lower()}")
    if differences:
        asked = f"{config.segmentor}/{config.dataset or 'custom classes'}"
        held = f"{metadata.segmentor}/{metadata.dataset or 'custom classes'}"
        raise RuntimeModelMismatchError(
            f"{where} holds another model ({held}) than the one asked for ({asked}): " + "; ".join(differences)
            + f". Export {asked} (`resnest-zoo export {config.segmentor} {config.dataset or 'DATASET'} --format ...`)"
            f" or load the file with the model it was exported from")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
