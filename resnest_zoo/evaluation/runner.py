"""``resnest_zoo.evaluate``: a model's mIoU on a copy of its dataset, on one process or every process of a torchrun.

The protocol is the checkpoint's published one unless asked otherwise: keep-ratio resize to the test-time size,
whole image, single scale (the options of :func:`resnest_zoo.inference.engine.predict` change it). The images are
read by the shared input pipeline (:mod:`resnest_zoo.inference.loader`), each label map is compared with its
annotation on the model's device (:class:`~resnest_zoo.metric.ConfusionMatrix`), and under torchrun each process evaluates
its own shard (:func:`resnest_zoo.distributed.shard`) and the matrices are summed once at the end.
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch

from ..datasets import READERS
from ..datasets.annotations import check_sizes
from ..distributed import device_for, process_group, ranks_from_environment, shard
from ..errors import DatasetError
from ..inference.engine import plan_inference
from ..inference.loader import ImageFiles, LoadedImage, load_images
from ..inference.stream import resolve_workers, segment_loaded
from ..progress import progress_bar
from ..metric import ConfusionMatrix
from .result import EvaluationResult

__all__ = ["evaluate"]

_PROGRESS_EVERY_S = 0.5


def _dataset_of(model: torch.nn.Module, dataset: str | None) -> str:
    from ..catalogue import resolve_dataset

    config = model.config
    key = resolve_dataset(dataset) if dataset is not None else config.dataset
    if key is None:
        raise ValueError("the model has classes of its own (model.config.dataset is None): pass dataset='voc', "
                         "'ade20k' or 'cityscapes' to say whose annotations its classes are")
    expected = READERS[key].info.num_classes
    if config.num_classes != expected or (config.dataset is not None and config.dataset != key):
        raise ValueError(f"a model of {config.num_classes} {config.dataset or 'custom'} classes cannot be evaluated "
                         f"on {key} ({expected} classes); load the {key} checkpoint of the segmentor instead")
    return key


def _failure(item: LoadedImage) -> DatasetError:
    """The error of an image or annotation that could not be used (annotation messages name their file)."""
    return DatasetError(f"{item.path}: {item.error}" if item.error_path == item.path else str(item.error))


def evaluate(
    model: torch.nn.Module,
    data_root: str | os.PathLike[str],
    *,
    split: str = "val",
    dataset: str | None = None,
    limit: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    **options: Any,
) -> EvaluationResult:
    """Evaluate ``model`` on the ``split`` of its dataset found in ``data_root``; the mIoU to compare with the table.

    Args:
        model: a segmentor with its ``config`` (from ``resnest_zoo.load`` / ``build``).
        data_root: the dataset as distributed: ``VOCdevkit/VOC2012``, ``ADEChallengeData2016`` or the Cityscapes
            folder holding ``leftImg8bit`` and ``gtFine`` (or a folder above it; layouts: docs/evaluation.md).
        split: ``"val"`` (the published figures), ``"train"``, or ``"trainval"`` (VOC).
        dataset: whose annotations to read; default the model's own dataset.
        limit: only the first ``limit`` images (sorted by id), for a quick check.
        device: where to compute; default where the model is, or under torchrun the GPU of ``LOCAL_RANK``.
        batch_size: images per forward pass (default 4).
        workers: ``DataLoader`` processes decoding and resizing (default: half the CPUs, at most 8; 0 = none).
        progress: show a progress bar with the running mIoU and images/s (on rank 0).
        options: the inference options of ``model.predict`` -- ``mode``, ``crop_size``, ``stride``, ``scales``,
            ``flip``, ``dtype``, ``channels_last`` (default: the checkpoint's published protocol).

    Under ``torchrun``, each process evaluates a disjoint share of the images and the confusion matrices are
    summed once at the end; every process returns the same result. A dataset that cannot be evaluated raises
    :class:`~resnest_zoo.DatasetError` naming the file, before the long run when it can be seen from the listing
    and the files' headers (missing folders, split lists, images or annotations, sizes that differ).
    """
    started = time.perf_counter()
    plan = plan_inference(model, batch_size=batch_size, **options)
    key = _dataset_of(model, dataset)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive whole number of images, got {limit!r}")
    reader = READERS[key]
    found = reader.samples(data_root, split)
    samples = found[:limit]
    ranks = ranks_from_environment()
    mine = shard(samples, ranks)
    check_sizes(mine)
    count = resolve_workers(workers, ranks.local_world_size)
    # default: where the model is; under torchrun (or when asked), the device of this rank
    target = plan.prepare(model, None if device is None and not ranks.distributed else device_for(device, ranks))

    files = ImageFiles([s.image for s in mine], plan.config.preprocessing,
                       annotations=[(s.annotation, reader.mapping_for(s.annotation)) for s in mine])
    confusion = ConfusionMatrix(plan.config.num_classes, target)
    bar = progress_bar(len(mine), unit="img", desc="evaluating", enabled=progress and ranks.is_main)
    with process_group(ranks, target), bar:
        loaded = load_images(files, workers=count, pin_memory=target.type == "cuda")
        last_shown = time.perf_counter()
        for batch, labels in segment_loaded(model, plan, target, loaded):
            for item, prediction in zip(batch, labels):
                if prediction is None:
                    raise _failure(item)
                confusion.update(prediction, item.label)
            bar.update(len(batch))
            if progress and time.perf_counter() - last_shown > _PROGRESS_EVERY_S:
                last_shown = time.perf_counter()
                bar.set_postfix_str(f"mIoU {100 * confusion.metrics().miou:.2f}", refresh=False)
        confusion.all_reduce()
    entry = getattr(model, "entry", None)
    # the published figure is this model's only when it still predicts the checkpoint's classes (not fine-tuned)
    same_model = entry is not None and entry.dataset == key and plan.config.dataset == entry.dataset
    published = entry.miou / 100 if same_model else None
    protocol = {
        "resize": "x".join(map(str, plan.config.preprocessing.resize)), "mode": plan.mode,
        "scales": list(plan.scales), "flip": plan.flip,
        "dtype": str(plan.autocast_dtype or plan.input_dtype).replace("torch.", ""),
        "batch_size": plan.batch_size, "processes": ranks.world_size, "device": target.type,
    }
    name = f"{entry.segmentor}/{entry.dataset}" if entry is not None else type(model).__name__
    return EvaluationResult(name, key, split, tuple(plan.config.class_names), confusion.numpy(), len(samples),
                            time.perf_counter() - started, published, protocol, images_found=len(found),
                            published_images=reader.split_sizes.get(split))
