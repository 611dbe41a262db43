"""Segmenting a stream of image files: the loop that evaluation and batch prediction share, and
:meth:`Segmentor.predict_stream`.

:func:`segment_loaded` takes the :class:`~.loader.LoadedImage` s that :func:`~.loader.load_images` reads ahead in
worker processes, batches equal shapes (:class:`~.loader.ShapeBatcher`), runs the model's test-time inference
(:class:`~.engine.InferencePlan`: the same computation as ``model.predict``) and hands back each batch with its
label maps still on the device, at the images' original size. Files that could not be read come through alone,
with no label map, where the caller decides what they mean (evaluation stops, batch prediction records them).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ImageReadError
from .engine import InferencePlan, evaluating, plan_inference
from .inputs import collect_inputs
from ..options import default_workers
from .loader import ImageFiles, LoadedImage, ShapeBatcher, load_images, to_device
from .prediction import Prediction

__all__ = ["segment_loaded", "predictions_of", "predict_stream", "resolve_workers"]


def resolve_workers(workers: int | None, local_processes: int = 1) -> int:
    """``workers`` checked, or the default for this node (:func:`resnest_zoo.options.default_workers`)."""
    if workers is None:
        return default_workers(local_processes)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a whole number >= 0 (0 reads files in this process), got {workers!r}")
    return workers


def segment_loaded(model: torch.nn.Module, plan: InferencePlan, device: torch.device,
                   loaded: Iterable[LoadedImage]) -> Iterator[tuple[list[LoadedImage], list[torch.Tensor | None]]]:
    """``(images, label maps on device)`` per batch; an unreadable image comes alone with ``[None]``.

    Batches may leave in a different order than the images came (equal shapes are grouped); the model is in eval
    mode and inference mode only while a batch runs, never while the caller holds a batch.
    """
    batcher = ShapeBatcher(plan.batch_size if plan.mode == "whole" else 1)

    def run(batch: list[LoadedImage]) -> tuple[list[LoadedImage], list[torch.Tensor | None]]:
        with evaluating(model):
            inputs = to_device([item.tensor for item in batch], device)
            results = plan.labels(model, device, list(inputs.split(1)), [item.size for item in batch])
        for item in batch:
            item.tensor = None  # the network's input is no longer needed; free it before the next batch
        return batch, [labels for labels, _ in results]

    for item in loaded:
        if item.error is not None:
            yield [item], [None]
            continue
        for batch in batcher.add(item):
            yield run(batch)
    for batch in batcher.flush():
        yield run(batch)


def predictions_of(batch: Sequence[LoadedImage], labels: Sequence[torch.Tensor | None],
                   config: Any) -> list[Prediction | None]:
    """A batch of :func:`segment_loaded` as :class:`~resnest_zoo.Prediction` s (None for an image that could not be
    read), the label maps read back from the device in one transfer; the pictures are kept when they were loaded."""
    readable = [label for label in labels if label is not None]
    flat = torch.cat([label.reshape(-1) for label in readable]).cpu().numpy() if readable else None
    palette = np.asarray(config.palette, dtype=np.uint8)
    results: list[Prediction | None] = []
    offset = 0
    for item, label in zip(batch, labels):
        if label is None:
            results.append(None)
            continue
        host = flat[offset:offset + label.numel()].reshape(tuple(label.shape))
        offset += label.numel()
        image = item.image.numpy() if item.image is not None else None
        results.append(Prediction(host, config.class_names, palette, image=image))
    return results


def predict_stream(
    model: torch.nn.Module,
    images: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | torch.device | None = None,
    keep_image: bool = True,
    **options: Any,
) -> Iterator[Prediction]:
    """Segment many image files, yielding one :class:`~resnest_zoo.Prediction` per file, in input order.

    Files are decoded, resized and normalised ``workers`` at a time in ``DataLoader`` worker processes (default:
    half the CPUs, at most 8; 0 reads them in this process) while the model runs; images of the same resized size
    share forward passes of ``batch_size``; on a GPU, pinned memory and non-blocking copies keep it busy. Memory
    holds only the images in flight, however many files there are. The predictions are those of
    ``model.predict(path, ...)`` with the same ``device`` and ``options`` (``dtype``, ``mode``, ``crop_size``,
    ``stride``, ``scales``, ``flip``, ``channels_last``: see :func:`resnest_zoo.inference.engine.predict`).

    Args:
        images: a file, a folder (every image below it, sorted), a glob pattern, or an iterable of these.
        keep_image: keep each decoded picture in its prediction (for ``overlay()``); False saves memory.

    Raises:
        ImageReadError: at the position of a file that cannot be read (missing, empty, truncated, not an image,
            a decompression bomb), after every earlier prediction was yielded. To skip and record such files,
            use :func:`resnest_zoo.predict_to_folder`.
    """
    plan = plan_inference(model, batch_size=batch_size, **options)
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    paths = [item.path for item in collect_inputs(items)]
    count = resolve_workers(workers)
    target = plan.prepare(model, device)
    return _ordered(model, plan, target, paths, workers=count, keep_image=keep_image)


def _ordered(model: torch.nn.Module, plan: InferencePlan, device: torch.device, paths: list[Any], *, workers: int,
             keep_image: bool) -> Iterator[Prediction]:
    files = ImageFiles(paths, plan.config.preprocessing, keep_image=keep_image)
    loaded = load_images(files, workers=workers, pin_memory=device.type == "cuda")
    waiting: dict[int, Prediction | ImageReadError] = {}
    position = 0
    for batch, labels in segment_loaded(model, plan, device, loaded):
        for item, prediction in zip(batch, predictions_of(batch, labels, plan.config)):
            waiting[item.index] = prediction if prediction is not None else \
                ImageReadError(item.error_path or item.path, item.error or "unreadable")
        while position in waiting:
            result = waiting.pop(position)
            position += 1
            if isinstance(result, ImageReadError):
                raise result
            yield result
