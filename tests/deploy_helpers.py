"""Small segmentors and their runtime files, shared by the ONNX, OpenVINO and backend tests.

A full ResNeSt-101 takes seconds to export and to run; what the export has to get right -- every head's
operators, the split-attention reshapes, strided and dilated blocks, identity and projection shortcuts, dynamic
sizes -- is all in a ResNeSt-50 backbone cut to its first block per stage (two in the dilated stages 3 and 4)
with 64-channel heads, which exports in about a second. Each file is written once per test process (the cache
below is shared by all test modules) into a temporary folder removed at exit.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from resnest_zoo.catalogue import get_entry
from resnest_zoo.config import HeadConfig, ModelConfig
from resnest_zoo.models.segmentor import Segmentor, build_segmentor

from conftest import randomize_batchnorm

HEADS = ("fcn", "pspnet", "deeplabv3", "deeplabv3plus")
PHOTO = Path(__file__).parent / "data" / "chelsea_160x106.png"
SOURCE_SHA256 = "ab" * 32
SMALL_TARGET = (192, 128)
"""Keep-ratio resize target of the small models: the photo becomes 128 x 193."""
SIZES = [(1, 3, 64, 96), (2, 3, 56, 48)]
"""Two batch sizes and two image sizes, run from one file: the dynamic axes at work."""

_FOLDER = Path(tempfile.mkdtemp(prefix="resnest_zoo_deploy_"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)


def small_config(head: str, dataset: str = "voc") -> ModelConfig:
    """The catalogue entry's config with a ResNeSt-50 backbone, 64-channel heads and a small resize target."""
    config = get_entry(head, dataset).config
    head_kwargs = {**config.head.to_dict(), "feats_channels": 64}
    return replace(config, backbone=replace(config.backbone, arch="resnest50"), head=HeadConfig.from_dict(head_kwargs),
                   preprocessing=replace(config.preprocessing, resize=SMALL_TARGET))


BLOCKS_KEPT = {"layer1": 1, "layer2": 1, "layer3": 2, "layer4": 2}


@lru_cache(maxsize=None)
def small_segmentor(head: str) -> Segmentor:
    """A seeded random small segmentor (non-trivial BatchNorm statistics), in eval mode. Do not modify it."""
    torch.manual_seed(HEADS.index(head))
    model = build_segmentor(small_config(head))
    for stage, kept in BLOCKS_KEPT.items():
        setattr(model.backbone_net, stage, getattr(model.backbone_net, stage)[:kept])
    return randomize_batchnorm(model, seed=HEADS.index(head)).eval()


@lru_cache(maxsize=None)
def small_onnx(head: str) -> Path:
    """:func:`small_segmentor` exported with the defaults (dynamic axes, BatchNorm folded, opset 17)."""
    from resnest_zoo.deploy.onnx import export_onnx

    return export_onnx(small_segmentor(head), _FOLDER / f"{head}.onnx", source_sha256=SOURCE_SHA256)


def folder() -> Path:
    """The shared temporary folder (for files the tests write themselves, under names of their own)."""
    return _FOLDER


def torch_logits(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """``model(images)`` as the runtimes return it: a float32 numpy array."""
    with torch.inference_mode():
        return model(images).numpy()


@lru_cache(maxsize=None)
def reference_logits(head: str) -> tuple[tuple[torch.Tensor, np.ndarray], ...]:
    """Seeded inputs at each of :data:`SIZES` and :func:`small_segmentor`'s logits for them, computed once for
    every runtime that is compared with them."""
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(shape, generator=generator) for shape in SIZES]
    return tuple((images, torch_logits(small_segmentor(head), images)) for images in inputs)
