"""INT8 OpenVINO IR through NNCF post-training quantization, with a measured accuracy figure beside it.

>>> resnest_zoo.export_openvino_int8(model, "deeplabv3plus_int8.xml", calibration="photos/")   # doctest: +SKIP

The float32 network is :func:`~resnest_zoo.deploy.openvino.openvino_model`'s (the verified ONNX graph, the
split-attention convolutions written densely so that all of them quantize). NNCF (``nncf``, OpenVINO's compression
library) calibrates it on images of a **calibration source**:

* a folder of images, or a list file (one path per line, as ``predict --list`` reads it);
* a dataset split as distributed, ``"DATASET:ROOT[:SPLIT]"`` (``"voc:/data/VOCdevkit:val"``; split default
  :data:`~resnest_zoo.options.SPLIT`), read by the dataset readers of ``evaluate``, with its annotations;
* a Python iterable of images (anything ``predict`` accepts), or of ``(image, label_map)`` pairs.

Each image is preprocessed exactly as ``predict`` does it (keep-ratio resize, normalisation, then the whole image
or its sliding windows as the model's config says: the engine itself lists the network inputs), and
:data:`~resnest_zoo.options.CALIBRATION_SIZE` images are used, evenly spaced through the source, a share
(:data:`~resnest_zoo.options.HELD_OUT`) of them held out.

The accuracy figure:

* **with labels** (a dataset split, or ``(image, label)`` pairs), NNCF's accuracy-controlled quantization runs with
  the mIoU of :mod:`resnest_zoo.metric` (``evaluate``'s metric) over the labelled images as validation function:
  the layers that cost most accuracy go back to floating point until the drop is at most ``max_miou_drop``
  points; if it cannot get there, :class:`~resnest_zoo.AccuracyBoundError` gives the drop reached and nothing is
  written;
* **always**, the label agreement between the INT8 and the float32 network on the held-out images (% of pixels).

Both, and the source's description and size, go into the file's metadata
(:class:`~resnest_zoo.formats.runtime.QuantizationReport`), read back as ``RuntimeModel.metadata.quantization``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..catalogue import resolve_dataset
from ..datasets import READERS
from ..devices import warn_if_int8_not_native
from ..errors import AccuracyBoundError, CalibrationError, DatasetError, UnknownModelError
from ..files import IMAGE_SUFFIXES
from ..formats.runtime import FORMAT_KEY, QuantizationReport
from ..inference.engine import InferencePlan, plan_inference
from ..inference.inputs import collect_inputs, read_list_file
from ..inference.loader import ImageFiles, LoadedImage
from ..inference.preprocess import parse_image, preprocess
from ..metric import ConfusionMatrix, segmentation_metrics
from ..options import (
    CALIBRATION_HELP,
    CALIBRATION_SIZE,
    HELD_OUT,
    MAX_MIOU_DROP,
    MIN_CALIBRATION_IMAGES,
    OPSET,
    RESTORE_ITERATIONS,
    SPLIT,
)
from .onnx import export_file, model_config, runtime_metadata
from .openvino import openvino_core, openvino_model, save_ir
from .optional import require

__all__ = ["export_openvino_int8", "CalibrationSource", "calibration_source", "CalibrationImages"]

_LISTED = 5
"""Unreadable files named in a message before ``...``."""


# ------------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration images come from: ``load(index)`` reads image ``index`` of ``count`` as
    :class:`~resnest_zoo.inference.loader.LoadedImage` (normalised at the resized size, with its label map when
    ``labelled``; ``error`` set when it cannot be read); ``description`` says what it is, in words."""

    description: str
    count: int
    labelled: bool
    load: Callable[[int], LoadedImage]


def calibration_source(source: Any, model: nn.Module) -> CalibrationSource:
    """The :class:`CalibrationSource` of ``source`` (see the module docs) for ``model``'s preprocessing;
    :class:`~resnest_zoo.CalibrationError` for one that does not exist or holds no images."""
    config = model_config(model)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        spec = _dataset_spec(text)
        if spec is not None:
            return _dataset_source(*spec, config)
        path = Path(text)
        if path.is_dir():
            files = [item.path for item in collect_inputs([path])]
            what = f"folder {text}"
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            files, what = [path], f"image {text}"
        elif path.is_file():
            try:
                files, what = read_list_file(path), f"list file {text}"
            except UnicodeDecodeError:
                raise CalibrationError(f"calibration source {text!r} is neither an image nor a list file of image "
                                       f"paths (UTF-8 text); expected {CALIBRATION_HELP}") from None
        else:
            raise CalibrationError(f"calibration source {text!r} does not exist; expected {CALIBRATION_HELP}")
        if not files:
            raise CalibrationError(f"the calibration source, {what}, holds no images; expected {CALIBRATION_HELP}")
        reader = ImageFiles(files, config.preprocessing)
        return CalibrationSource(f"{what} ({len(files)} images)", len(files), False, reader.__getitem__)
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, Iterable):
        raise CalibrationError(f"calibration must be {CALIBRATION_HELP}, or an iterable of images; got "
                               f"{type(source).__qualname__}")
    items = list(source)
    if not items:
        raise CalibrationError("the calibration images given are none (an empty iterable)")
    labelled = [_is_pair(item) for item in items]
    if any(labelled) and not all(labelled):
        raise CalibrationError("calibration items must be all images or all (image, label map) pairs, not a mix")

    def load(index: int) -> LoadedImage:
        image, label = items[index] if labelled[0] else (items[index], None)
        loaded = LoadedImage(index, f"calibration image {index}")
        try:
            pixels = parse_image(image).pixels
        except (ValueError, TypeError, OSError) as exc:
            loaded.error = str(exc)
            return loaded
        loaded.size = (int(pixels.shape[1]), int(pixels.shape[2]))
        loaded.tensor = preprocess(pixels, config.preprocessing)
        if label is not None:
            loaded.label = torch.as_tensor(np.asarray(label)).long()
            if tuple(loaded.label.shape) != loaded.size:
                loaded.error = (f"its label map is {tuple(loaded.label.shape)}, the image {loaded.size} "
                                "(height, width): they must be the same size")
        return loaded

    kind = "labelled images" if labelled[0] else "images"
    return CalibrationSource(f"{len(items)} {kind} given in Python", len(items), labelled[0], load)


def _is_pair(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and getattr(item[1], "ndim", None) == 2


def _dataset_spec(text: str) -> tuple[str, str, str] | None:
    """``(dataset key, root, split)`` of ``"DATASET:ROOT[:SPLIT]"``; None when ``text`` does not start with a
    dataset name and a colon (a path, even ``C:\\photos``)."""
    head, colon, rest = text.partition(":")
    if not colon or not rest:
        return None
    try:
        key = resolve_dataset(head)
    except UnknownModelError:
        return None
    root, colon, split = rest.rpartition(":")
    return (key, root, split) if colon and split in READERS[key].splits else (key, rest, SPLIT)


def _dataset_source(key: str, root: str, split: str, config: Any) -> CalibrationSource:
    reader = READERS[key]
    if config.num_classes != reader.info.num_classes:
        raise CalibrationError(f"the model predicts {config.num_classes} classes, {reader.info.title} has "
                               f"{reader.info.num_classes}: calibrate it on images of its own classes (a folder, or "
                               "(image, label) pairs)")
    try:
        samples = reader.samples(root, split)
    except DatasetError as exc:
        raise CalibrationError(f"calibration source {key}:{root}:{split}: {exc}") from None
    if not samples:
        raise CalibrationError(f"the {split} split of {reader.info.title} in {root} holds no images")
    files = ImageFiles([s.image for s in samples], config.preprocessing,
                       annotations=[(s.annotation, reader.mapping_for(s.annotation)) for s in samples])
    return CalibrationSource(f"{reader.info.title} {split} split in {root} ({len(samples)} images)", len(samples),
                             True, files.__getitem__)


# --------------------------------------------------------------------------------------- the images used
class CalibrationImages:
    """The images of a :class:`CalibrationSource` an INT8 quantization uses: ``calibration`` and ``held_out``
    (indices into the source), and the network inputs of each image as ``predict`` would run them.

    Images are read again each time they are needed (NNCF goes over them several times), so that 300 full-size
    photographs never sit in memory at once; all are read once here, so that a file that cannot be read is named
    before any work."""

    def __init__(self, source: CalibrationSource, plan: InferencePlan, size: int) -> None:
        self.source, self.plan = source, plan
        wanted = size + max(1, math.ceil(size * HELD_OUT))
        needed = MIN_CALIBRATION_IMAGES + 1
        if source.count < needed:
            raise CalibrationError(f"the calibration source, {source.description}, has {source.count} image"
                                   f"{'s' if source.count != 1 else ''}; INT8 quantization needs at least {needed} "
                                   f"({MIN_CALIBRATION_IMAGES} to calibrate on and one held out to measure it)")
        chosen = _evenly_spaced(source.count, min(wanted, source.count))
        held = max(1, round(len(chosen) * HELD_OUT))
        if len(chosen) - held < MIN_CALIBRATION_IMAGES:
            held = len(chosen) - MIN_CALIBRATION_IMAGES
        held_positions = set(_evenly_spaced(len(chosen), held))
        self.held_out = [chosen[i] for i in sorted(held_positions)]
        self.calibration = [index for i, index in enumerate(chosen) if i not in held_positions]
        self.windows: dict[int, int] = {}
        failed = []
        for index in chosen:
            loaded = source.load(index)
            if loaded.error is not None:
                failed.append(f"{loaded.error_path or loaded.path}: {loaded.error}")
            else:
                self.windows[index] = len(self.inputs(loaded))
        if failed:
            shown = "; ".join(failed[:_LISTED]) + (" ..." if len(failed) > _LISTED else "")
            raise CalibrationError(f"{len(failed)} of the {len(chosen)} calibration images of {source.description} "
                                   f"cannot be read: {shown}; fix or remove them")
        self._last: tuple[int, LoadedImage] | None = None

    def image(self, index: int) -> LoadedImage:
        """Image ``index`` of the source, read (the last one read is kept: its windows are asked for in turn)."""
        if self._last is None or self._last[0] != index:
            self._last = (index, self.source.load(index))
        return self._last[1]

    def inputs(self, loaded: LoadedImage) -> list[np.ndarray]:
        """The network inputs ``predict`` runs for ``loaded``: the whole image, or its windows (one at a time)."""
        seen: list[np.ndarray] = []

        def record(images: torch.Tensor) -> torch.Tensor:
            seen.extend(np.ascontiguousarray(image[None].numpy()) for image in images)
            return images.new_zeros((images.shape[0], self.plan.config.num_classes, *images.shape[2:]))

        self.plan.labels(record, torch.device("cpu"), [loaded.tensor[None]], [loaded.size])
        return seen

    def calibration_inputs(self) -> list[tuple[int, int]]:
        """``(image, window)`` of every network input of the calibration images."""
        return [(index, window) for index in self.calibration for window in range(self.windows[index])]

    def network_input(self, key: tuple[int, int]) -> np.ndarray:
        index, window = key
        return self.inputs(self.image(index))[window]

    def labels(self, network: Callable[[np.ndarray], np.ndarray], index: int) -> tuple[torch.Tensor, LoadedImage]:
        """The label map ``predict`` gives image ``index`` with ``network`` (images -> logits, numpy) computing."""
        loaded = self.image(index)

        def run(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(network(np.ascontiguousarray(images.numpy())))

        return self.plan.labels(run, torch.device("cpu"), [loaded.tensor[None]], [loaded.size])[0][0], loaded


def _evenly_spaced(count: int, wanted: int) -> list[int]:
    """``wanted`` distinct indices in ``range(count)``, spread evenly, first and last included."""
    if wanted <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, wanted)}) if wanted < count else list(range(count))


# ------------------------------------------------------------------------------------------ measurements
def _compiled(ov_model: Any, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """``ov_model`` compiled for the CPU in float32 (the layers left in floating point), as a numpy function."""
    compiled = openvino_core().compile_model(ov_model, "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    return _as_function(compiled)


def _as_function(compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
    request = compiled.create_infer_request()

    def run(images: np.ndarray) -> np.ndarray:
        request.infer({0: images})
        return request.get_output_tensor(0).data.copy()

    return run


def _miou(images: CalibrationImages, network: Callable[[np.ndarray], np.ndarray],
          indices: list[int]) -> tuple[float, list[float]]:
    """mIoU in points over the labelled images ``indices`` (one confusion matrix, as ``evaluate``), and per image."""
    total = ConfusionMatrix(images.plan.config.num_classes)
    per_image = []
    for index in indices:
        labels, loaded = images.labels(network, index)
        single = ConfusionMatrix(images.plan.config.num_classes)
        single.update(labels, loaded.label)
        total.counts += single.counts
        per_image.append(float(np.nan_to_num(100 * segmentation_metrics(single.numpy()).miou, nan=100.0)))
    return 100 * total.metrics().miou, per_image


def _agreement(images: CalibrationImages, first: Callable[[np.ndarray], np.ndarray],
               second: Callable[[np.ndarray], np.ndarray]) -> float:
    """% of the held-out images' pixels that get the same label from both networks."""
    same = total = 0
    for index in images.held_out:
        a, _ = images.labels(first, index)
        b, _ = images.labels(second, index)
        same += int((a == b).sum())
        total += a.numel()
    return 100.0 * same / total


@contextmanager
def _nncf_quiet(quiet: bool) -> Iterator[None]:
    """NNCF's own log (INFO) and progress bars (printed to standard output) only when progress is asked for."""
    if not quiet:
        yield
        return
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


# -------------------------------------------------------------------------------------------------- export
def export_openvino_int8(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    calibration: Any,
    calibration_size: int = CALIBRATION_SIZE,
    max_miou_drop: float = MAX_MIOU_DROP,
    source_sha256: str | None = None,
    opset: int = OPSET,
    threads: int | None = None,
    progress: bool = False,
) -> Path:
    """Write ``model`` as an INT8 OpenVINO IR (``path``, ``.xml``, and the ``.bin`` beside it) and return the path.

    Args:
        model: a segmentor from :func:`~resnest_zoo.load` / :func:`~resnest_zoo.build` (not changed).
        calibration: the calibration source (see the module docs): a folder, a list file, ``"DATASET:ROOT[:SPLIT]"``,
            or an iterable of images or of ``(image, label map)`` pairs.
        calibration_size: images to calibrate on (default :data:`~resnest_zoo.options.CALIBRATION_SIZE`), plus
            :data:`~resnest_zoo.options.HELD_OUT` of that held out.
        max_miou_drop: with labelled calibration data, the largest mIoU drop accepted, in points (default
            :data:`~resnest_zoo.options.MAX_MIOU_DROP`).
        source_sha256, opset: as for :func:`~resnest_zoo.export_openvino`.
        threads: CPU threads for the measurements (default ``torch.get_num_threads()``).
        progress: show NNCF's own log and progress bars.

    The file runs with ``load(..., backend="openvino", runtime_file=path)``; its
    :class:`~resnest_zoo.formats.runtime.QuantizationReport` (``RuntimeModel.metadata.quantization``) holds the
    figures. Raises :class:`~resnest_zoo.CalibrationError` (a source that cannot be used),
    :class:`~resnest_zoo.AccuracyBoundError` (the bound could not be met: nothing is written),
    :class:`~resnest_zoo.OptionalDependencyError` (``pip install "resnest-zoo[int8]"``) and
    :class:`~resnest_zoo.OutputWriteError`. Warns once where the CPU has no INT8 dot-product instructions.
    """
    if isinstance(calibration_size, bool) or not isinstance(calibration_size, int) or calibration_size < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"calibration_size must be a whole number of at least {MIN_CALIBRATION_IMAGES}, got "
                         f"{calibration_size!r}")
    if isinstance(max_miou_drop, bool) or not isinstance(max_miou_drop, (int, float)) or not 0 <= max_miou_drop <= 100:
        raise ValueError(f"max_miou_drop is in mIoU points, from 0 to 100; got {max_miou_drop!r}")
    options = dict(opset=opset, dynamic=True, fold_batchnorm=True, source_sha256=source_sha256, input_size=None)
    threads = torch.get_num_threads() if threads is None else threads

    def write(staged: Path) -> None:
        nncf = require("nncf", "INT8 quantization")
        warn_if_int8_not_native()
        images = CalibrationImages(calibration_source(calibration, model), plan_inference(model, batch_size=1),
                                   calibration_size)
        float_model = openvino_model(model, **options)
        float_network = _compiled(float_model, threads)
        calibration_set = nncf.Dataset(images.calibration_inputs(), images.network_input)
        settings = dict(subset_size=len(images.calibration_inputs()), target_device=nncf.TargetDevice.CPU)
        labelled = images.source.labelled
        validation = images.calibration + images.held_out
        with _nncf_quiet(not progress):
            if labelled:
                from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

                def validate(compiled: Any, indices: Iterable[int]) -> tuple[float, list[float]]:
                    return _miou(images, _as_function(compiled), list(indices))

                quantized = nncf.quantize_with_accuracy_control(
                    float_model, calibration_set, nncf.Dataset(validation), validate, max_drop=float(max_miou_drop),
                    drop_type=nncf.DropType.ABSOLUTE, advanced_accuracy_restorer_parameters=
                    AdvancedAccuracyRestorerParameters(max_num_iterations=RESTORE_ITERATIONS), **settings)
            else:
                quantized = nncf.quantize(float_model, calibration_set, **settings)
        int8_network = _compiled(quantized, threads)
        figures: dict[str, Any] = {}
        if labelled:
            figures["miou_float32"] = _miou(images, float_network, validation)[0]
            figures["miou_int8"] = _miou(images, int8_network, validation)[0]
            figures["max_miou_drop"] = float(max_miou_drop)
        report = QuantizationReport(images.source.description, len(images.calibration), len(images.held_out),
                                    _agreement(images, float_network, int8_network), **figures)
        if report.miou_drop is not None and report.miou_drop > max_miou_drop:
            raise AccuracyBoundError(
                f"INT8 quantization could not keep the mIoU drop within {max_miou_drop:g} points on "
                f"{report.calibration}: float32 {report.miou_float32:.2f}, INT8 {report.miou_int8:.2f}, a drop of "
                f"{report.miou_drop:.2f} points after returning up to {RESTORE_ITERATIONS} groups of layers to "
                f"floating point; allow a larger --max-miou-drop, calibrate on more images, or deploy in float32/"
                f"bfloat16 (export without --int8). Nothing was written", report.miou_drop, float(max_miou_drop))
        for key, value in {**runtime_metadata(model, **options), **report.metadata()}.items():
            quantized.set_rt_info(value, [FORMAT_KEY, key])
        save_ir(quantized, staged)

    return export_file(model, path, ".xml", write, options, needs=("openvino", "onnx", "nncf"), siblings=(".bin",))
