"""Image in, :class:`~resnest_zoo.Prediction` out: the implementation of :meth:`Segmentor.predict`.

The computation follows the reference (sssegmentation) evaluation, so a prediction here is what the published
mIoU was measured on:

1. every image is resized keep-ratio to the checkpoint's ``preprocessing.resize`` target with OpenCV's bilinear
   arithmetic and normalised (:func:`resnest_zoo.inference.preprocess.preprocess`);
2. for every test-time-augmentation path (each scale in ``scales``, and its horizontal mirror when ``flip``):
   the normalised image is rescaled (bilinear, ``align_corners=False``), run through the network either whole or
   as overlapping windows whose logits are summed and divided by the overlap count (``mode="slide"``), and the
   mirrored logits are flipped back;
3. each path's logits go back to the original image size with one bilinear interpolation, the paths are averaged,
   and the class is the argmax -- on the model's device, in bands of rows so that a large photograph with 150
   classes never needs its full-resolution logits in memory at once (unless ``probabilities=True``).

Nothing is read back to the host until the end: all label maps come back with a single ``.cpu()``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import resolve_device, warn_if_emulated
from ..options import BATCH_SIZE
from .prediction import Prediction
from .preprocess import ParsedImage, as_image_batch, errors_naming, preprocess

__all__ = ["predict", "InferencePlan", "plan_inference", "evaluating", "default_slide_window", "slide_windows",
           "resize_logits_rows"]

_BAND_ELEMENTS = 1 << 25
"""Upper bound on ``classes x rows x width`` of one band of full-resolution logits (128 MiB in float32)."""

_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


def predict(
    model: torch.nn.Module,
    images: Any,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    mode: str | None = None,
    crop_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    channels_last: bool = False,
    probabilities: bool = False,
    batch_size: int | None = None,
) -> Prediction | list[Prediction]:
    """Segment images with the checkpoint's own test-time preprocessing; labels come at the original size.

    Args:
        model: a :class:`~resnest_zoo.Segmentor` (``self`` when called as ``model.predict(...)``) with its
            ``config`` (:class:`~resnest_zoo.config.ModelConfig`: classes, palette, test-time preprocessing).
        images: one image -- a file path, a ``PIL.Image``, a numpy array ``HxW``/``HxWx3`` (uint8 0-255 or
            float in [0, 1]), a tensor ``CxHxW``/``HxWxC`` (uint8 or float in [0, 1]) -- or a batch: a list/tuple
            of those or a tensor ``NxCxHxW``. Alpha channels are discarded. See :mod:`resnest_zoo.inference.preprocess`.
        device: where to compute; ``None`` = where the model is. A different device **moves the model** there
            (once; it stays there). One this machine lacks raises :class:`~resnest_zoo.DeviceNotAvailableError`.
        dtype: ``None`` computes in the weights' dtype (float32); ``torch.bfloat16`` / ``torch.float16`` run
            under ``torch.autocast`` on the device (both work on CPU too); logits are averaged in float32. Where
            the device has no native units for it, one warning per process says how much slower it will be.
        mode: ``"whole"`` or ``"slide"``: overlapping ``crop_size`` windows every ``stride`` pixels, logits
            averaged where they overlap; default the model's own (``config.inference_mode``, ``"whole"`` for all
            published checkpoints).
        crop_size, stride: slide windows, an int or (height, width); default the training crop (512x512,
            512x1024 for Cityscapes) and two thirds of it (341). Only with ``mode="slide"``.
        scales, flip: test-time augmentation: each scale of the resized image (and its mirror when ``flip``)
            is predicted, its logits resized to the original size and averaged.
        channels_last: run in channels-last memory format (converts the model's weights once, for good).
        probabilities: also return ``(K, H, W)`` softmax probabilities at the original size (memory heavy).
        batch_size: images (whole) or windows (slide) per forward pass; default :data:`resnest_zoo.options.BATCH_SIZE`.

    The network is whatever ``model`` is: a segmentor (PyTorch), or a :class:`~resnest_zoo.RuntimeModel` whose
    network runs in ONNX Runtime or OpenVINO; ``model.predict(..., backend=...)`` chooses one
    (:mod:`resnest_zoo.deploy.runtime`), and everything here is the same for all of them.

    Returns:
        A :class:`~resnest_zoo.Prediction` for a single image; a list of them, in input order, when
        ``images`` is a list/tuple or a 4-D tensor.

    The model runs in eval mode under ``torch.inference_mode`` (a training-mode model is switched to eval for
    the call and back); the result is read back to the host once, at the end.
    """
    plan = plan_inference(model, dtype=dtype, mode=mode, crop_size=crop_size, stride=stride, scales=scales,
                          flip=flip, channels_last=channels_last, batch_size=batch_size)
    config = plan.config
    parsed, is_batch = as_image_batch(images)  # before touching the model: a bad input changes nothing
    if not parsed:
        return []
    target = plan.prepare(model, device)
    if plan.autocast_dtype is not None:
        warn_if_emulated(target, plan.autocast_dtype)  # once per process, where it is emulated
    labels: list[torch.Tensor] = []
    probs: list[torch.Tensor | None] = []
    with evaluating(model):
        for chunk in _chunks(parsed, plan.batch_size if plan.mode == "whole" else 1):
            inputs = []
            for image in chunk:
                with errors_naming([image]):  # an error names the batch item (index, path)
                    inputs.append(preprocess(image.pixels.to(target, non_blocking=True), config.preprocessing)[None])
            with errors_naming(chunk):
                chunk_labels = plan.labels(model, target, inputs, [image.size for image in chunk], probabilities)
            for image_labels, image_probs in chunk_labels:
                labels.append(image_labels)
                probs.append(image_probs)
            del inputs

    host_labels = torch.cat([item.reshape(-1) for item in labels]).cpu().numpy()  # the one host read of the labels
    palette = np.asarray(config.palette, dtype=np.uint8)
    results = []
    offset = 0
    for image, prob in zip(parsed, probs):
        height, width = image.size
        image_labels = host_labels[offset:offset + height * width].reshape(height, width)
        offset += height * width
        results.append(Prediction(
            labels=image_labels,
            class_names=config.class_names,
            palette=palette,
            image=np.ascontiguousarray(image.pixels.permute(1, 2, 0).cpu().numpy()),
            probabilities=None if prob is None else prob.cpu().numpy(),
        ))
    return results if is_batch else results[0]


# ------------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class InferencePlan:
    """``predict``'s options, checked once: how a batch of resized, normalised images becomes label maps.

    :func:`predict`, the streaming pipeline (:mod:`resnest_zoo.inference.stream`) and the evaluation share it,
    so a label map is computed the same way whichever of them asks.
    """

    config: Any
    mode: str
    window: tuple[int, int] | None
    stride: tuple[int, int] | None
    scales: list[float]
    flip: bool
    batch_size: int
    input_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    channels_last: bool

    @property
    def label_dtype(self) -> torch.dtype:
        return torch.uint8 if self.config.num_classes <= 256 else torch.int64

    def prepare(self, model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
        """Move the model to ``device`` (None: where it is) and convert it to channels-last if asked; the device."""
        target = _resolve_device(model, device)
        if self.channels_last:
            _to_channels_last(model)
        return target

    def run(self, model: torch.nn.Module, device: torch.device, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits of one forward pass over normalised ``(N, 3, h, w)`` images."""
        images = images.to(self.input_dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        context = (torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                   else nullcontext())
        with context:
            logits = model(images)
        return logits.float()

    def labels(self, model: torch.nn.Module, device: torch.device, inputs: list[torch.Tensor],
               sizes: Sequence[tuple[int, int]], probabilities: bool = False,
               ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per image, ``(labels, probabilities or None)`` at ``sizes`` (the original image sizes), on ``device``.

        ``inputs`` are normalised ``(1, 3, h, w)`` images at the resized size; equal-size ones share forward passes.
        Call under :func:`evaluating`.
        """
        def run(batch: torch.Tensor) -> torch.Tensor:
            return self.run(model, device, batch)

        if self.mode == "whole":
            path_logits = _whole_paths(run, inputs, self.scales, self.flip, self.batch_size)
        else:
            num_classes = self.config.num_classes
            path_logits = [_paths(lambda x: slide_logits(run, x, self.window, self.stride, num_classes,
                                                         self.batch_size), x, self.scales, self.flip)
                           for x in inputs]
        return [_labels_at(logits, size, self.label_dtype, probabilities) for logits, size in zip(path_logits, sizes)]


def plan_inference(model: torch.nn.Module, *, dtype: torch.dtype | None = None, mode: str | None = None,
                   crop_size: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
                   scales: Sequence[float] = (1.0,), flip: bool = False, channels_last: bool = False,
                   batch_size: int | None = None) -> InferencePlan:
    """Check ``predict``'s options against the model (see :func:`predict`) without touching it or any image."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(
            "predict() needs the model's config (its preprocessing, class names and palette), but model.config is None "
            "because the model was built outside resnest_zoo.build()/load(); set model.config = "
            "resnest_zoo.get_entry(segmentor, dataset).config for the checkpoint it carries, or call "
            "model(normalised_tensor)"
        )
    mode = config.inference_mode if mode is None else mode
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "whole" and (crop_size is not None or stride is not None):
        raise ValueError("crop_size and stride only apply to mode='slide'; pass mode='slide' or drop them")
    window = stride_hw = None
    if mode == "slide":
        window, stride_hw = default_slide_window(config.crop_size, crop_size, stride)
    scale_list = _check_scales(scales)
    batch = _check_batch_size(batch_size)
    if not isinstance(flip, bool):
        raise TypeError(f"flip must be True or False, got {flip!r}")
    input_dtype, autocast_dtype = _resolve_dtype(model, dtype)
    return InferencePlan(config, mode, window, stride_hw, scale_list, flip, batch, input_dtype, autocast_dtype,
                         bool(channels_last))


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm on its running statistics) and ``torch.inference_mode`` for the block; the model's
    training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------------- options
def default_slide_window(entry_crop: Sequence[int], crop_size: int | Sequence[int] | None,
                         stride: int | Sequence[int] | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(crop (h, w), stride (h, w))`` for sliding-window inference.

    The crop defaults to the checkpoint's training crop (512 x 512; 512 x 1024 for Cityscapes) and the stride to
    two thirds of the crop, rounded down (341 for 512, the sssegmentation/mmsegmentation convention).
    """
    crop = _pair(crop_size, "crop_size") if crop_size is not None else (int(entry_crop[0]), int(entry_crop[1]))
    step = _pair(stride, "stride") if stride is not None else (crop[0] * 2 // 3, crop[1] * 2 // 3)
    if step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(f"stride {step} is larger than crop_size {crop}: windows would leave pixels unseen")
    return crop, step


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be a positive int or a (height, width) pair of ints, got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def _check_scales(scales: Sequence[float]) -> list[float]:
    if isinstance(scales, (int, float)) or not isinstance(scales, Sequence) or len(scales) == 0:
        raise ValueError(f"scales must be a non-empty sequence of positive numbers such as (0.75, 1.0, 1.25), got {scales!r}")
    values = []
    for scale in scales:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"every scale must be a positive finite number, got {scale!r} in {scales!r}")
        values.append(float(scale))
    return values


def _check_batch_size(batch_size: int | None) -> int:
    if batch_size is None:
        return BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return int(batch_size)


def _resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to compute on; a ``device`` different from the model's moves the model there (once, for good)."""
    parameter = next(model.parameters(), None)
    current = parameter.device if parameter is not None else torch.device("cpu")
    if current.type == "meta":
        raise ValueError("the model's weights are on the meta device (not materialised); load weights before predict()")
    if device is None:
        return current
    wanted = resolve_device(device)  # DeviceNotAvailableError for a device this machine lacks
    if wanted.type != current.type or (wanted.index is not None and wanted.index != current.index):
        model.to(wanted)
        current = next(model.parameters()).device
    return current


def _resolve_dtype(model: torch.nn.Module, dtype: torch.dtype | None) -> tuple[torch.dtype, torch.dtype | None]:
    """``(dtype the input is cast to, autocast dtype or None)``."""
    parameter = next(model.parameters(), None)
    parameter_dtype = parameter.dtype if parameter is not None else torch.float32
    if dtype is None:
        return parameter_dtype, None
    if dtype == torch.float32:
        if parameter_dtype != torch.float32:
            raise ValueError(f"dtype=torch.float32 but the model's weights are {parameter_dtype}; call model.float() "
                             f"or pass dtype=None to compute in {parameter_dtype}")
        return torch.float32, None
    if dtype in _AUTOCAST_DTYPES:
        return parameter_dtype, dtype
    raise ValueError(f"dtype must be None, torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")


def _to_channels_last(model: torch.nn.Module) -> None:
    """Convert the model's 4-D weights to channels-last once (kept for later calls)."""
    if any(p.ndim == 4 and not p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters()):
        model.to(memory_format=torch.channels_last)


def _chunks(items: list[ParsedImage], size: int) -> Iterator[list[ParsedImage]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ------------------------------------------------------------------------------------------------- inference
def _augment(image: torch.Tensor, scale: float, mirrored: bool) -> torch.Tensor:
    if scale != 1.0:  # the reference rescales the normalised image, with the scale factor itself
        image = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
    return image.flip(-1) if mirrored else image


def _augmentations(scales: list[float], flip: bool) -> list[tuple[float, bool]]:
    return [(scale, mirrored) for scale in scales for mirrored in ((False, True) if flip else (False,))]


def _whole_paths(run, inputs: list[torch.Tensor], scales: list[float], flip: bool,
                 batch_size: int) -> list[list[torch.Tensor]]:
    """Per image, the logits ``(1, K, h, w)`` of every augmentation path; equal-size images share forward passes."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(inputs):
        groups.setdefault(tuple(image.shape), []).append(index)
    paths: list[list[torch.Tensor]] = [[] for _ in inputs]
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            members = indices[start:start + batch_size]
            stacked = torch.cat([inputs[i] for i in members])
            for scale, mirrored in _augmentations(scales, flip):
                logits = run(_augment(stacked, scale, mirrored))
                logits = logits.flip(-1) if mirrored else logits
                for offset, index in enumerate(members):
                    paths[index].append(logits[offset:offset + 1])
    return paths


def _paths(infer, image: torch.Tensor, scales: list[float], flip: bool) -> list[torch.Tensor]:
    results = []
    for scale, mirrored in _augmentations(scales, flip):
        logits = infer(_augment(image, scale, mirrored))
        results.append(logits.flip(-1) if mirrored else logits)
    return results


def slide_windows(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Window boxes ``(top, bottom, left, right)`` of the reference's sliding-window inference.

    Windows start every ``stride`` pixels; the last row/column of windows is shifted back to end at the border,
    and windows larger than the image shrink to it, so all windows have the same size.
    """
    crop_h, crop_w = crop
    stride_h, stride_w = stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    boxes = []
    for row in range(rows):
        for col in range(cols):
            left, top = col * stride_w, row * stride_h
            right, bottom = min(left + crop_w, width), min(top + crop_h, height)
            left, top = max(right - crop_w, 0), max(bottom - crop_h, 0)
            boxes.append((top, bottom, left, right))
    return boxes


def slide_logits(run, image: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int], num_classes: int,
                 batch_size: int) -> torch.Tensor:
    """Logits ``(1, K, H, W)`` of one image from overlapping windows run ``batch_size`` at a time.

    Each pixel gets the mean of the logits of the windows covering it, as in the reference's ``slide`` mode.
    """
    _, _, height, width = image.shape
    boxes = slide_windows(height, width, crop, stride)
    total = image.new_zeros((1, num_classes, height, width), dtype=torch.float32)
    count = image.new_zeros((1, 1, height, width), dtype=torch.float32)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start:start + batch_size]
        windows = torch.cat([image[:, :, top:bottom, left:right] for top, bottom, left, right in chunk])
        logits = run(windows)
        for (top, bottom, left, right), window_logits in zip(chunk, logits):
            total[0, :, top:bottom, left:right] += window_logits
            count[0, :, top:bottom, left:right] += 1
    return total / count


# ---------------------------------------------------------------------------------- back to original size
def _bilinear_taps(source: int, destination: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Indices and weights of ``F.interpolate(mode='bilinear', align_corners=False)`` along one axis."""
    scale = np.float32(source) / np.float32(destination)
    position = np.maximum(scale * (np.arange(destination, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    first = np.floor(position).astype(np.int64)
    first = np.minimum(first, source - 1)
    weight_second = (position - first).astype(np.float32)
    second = np.minimum(first + 1, source - 1)
    weight_first = (np.float32(1.0) - weight_second).astype(np.float32)
    return tuple(torch.from_numpy(v).to(device) for v in (first, second, weight_first, weight_second))


def resize_logits_rows(logits: torch.Tensor, size: tuple[int, int]) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Bilinear (``align_corners=False``) resize of ``(K, h, w)`` logits to ``size``, yielded in bands of rows.

    Yields ``(first_row, end_row, band)`` with ``band`` of shape ``(K, end_row - first_row, W)``; the result equals
    ``F.interpolate(logits[None], size, mode="bilinear", align_corners=False)[0]`` up to float rounding, without
    ever holding all of it. Each band's rows are blended from their two source rows at the source width, then
    widened by ``F.interpolate`` itself (its height unchanged, so exact along that axis), which is 2.5-3x faster
    than gathering columns and about as fast as one whole ``F.interpolate``.
    """
    classes, height, width = logits.shape
    out_height, out_width = size
    y0, y1, wy0, wy1 = _bilinear_taps(height, out_height, logits.device)
    rows_per_band = max(1, _BAND_ELEMENTS // max(1, classes * max(out_width, width)))
    for start in range(0, out_height, rows_per_band):
        end = min(start + rows_per_band, out_height)
        rows = (logits.index_select(1, y0[start:end]) * wy0[start:end, None]
                + logits.index_select(1, y1[start:end]) * wy1[start:end, None])
        yield start, end, F.interpolate(rows[None], size=(end - start, out_width), mode="bilinear",
                                        align_corners=False)[0]


def _labels_at(path_logits: list[torch.Tensor], size: tuple[int, int], label_dtype: torch.dtype,
               probabilities: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Argmax (and optionally softmax) of the mean of the paths' logits, each resized once to ``size``."""
    height, width = size
    first = path_logits[0]
    labels = torch.empty((height, width), dtype=label_dtype, device=first.device)
    probs = torch.empty((first.shape[1], height, width), dtype=torch.float32, device=first.device) if probabilities else None
    bands = [resize_logits_rows(logits[0], size) for logits in path_logits]
    for parts in zip(*bands):
        start, end = parts[0][0], parts[0][1]
        mean = parts[0][2]
        for _, _, band in parts[1:]:
            mean = mean + band
        if len(parts) > 1:
            mean = mean / len(parts)
        labels[start:end] = mean.argmax(0).to(label_dtype)
        if probs is not None:
            probs[:, start:end] = mean.softmax(0)
    return labels, probs
