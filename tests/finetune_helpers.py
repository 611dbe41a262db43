"""Shared by the fine-tuning and saved-model tests: a small trainable config, a synthetic two-class data set (as
tensors and as a folder of PNGs), and a stand-in for pretrained BatchNorm statistics."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnest_zoo.catalogue import get_entry
from resnest_zoo.config import ModelConfig
from resnest_zoo.training import poly_lr_scheduler, segmentation_loss, sgd

CLASSES = ("sea", "sand")
PALETTE = ((20, 60, 200), (220, 190, 90))
SIZE = 64


def small_config(segmentor: str = "fcn") -> ModelConfig:
    """A published architecture made quick to train on a CPU: ResNeSt-50 at output stride 32, pictures predicted at
    their own 64x64 size, two classes of its own. Everything else (heads, pipeline) is the catalogue entry's."""
    config = get_entry(segmentor, "voc").config
    return dataclasses.replace(
        config, backbone=dataclasses.replace(config.backbone, arch="resnest50", output_stride=32),
        preprocessing=dataclasses.replace(config.preprocessing, resize=(SIZE, SIZE)),
    ).with_classes(CLASSES, PALETTE)


def synthetic_pairs(count: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` 64x64 pictures of sea and sand split along a vertical or horizontal middle line (which side is
    which varies, so only the colour tells them apart), with noise; and their masks (0 sea, 1 sand)."""
    generator = torch.Generator().manual_seed(seed)
    sea, sand = (torch.tensor(colour).view(3, 1, 1) for colour in PALETTE)
    images = torch.empty(count, 3, SIZE, SIZE, dtype=torch.uint8)
    masks = torch.zeros(count, SIZE, SIZE, dtype=torch.long)
    for index in range(count):
        mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
        if index % 2:
            mask[:, : SIZE // 2] = 1
        else:
            mask[: SIZE // 2, :] = 1
        if index % 4 >= 2:
            mask = 1 - mask
        noise = torch.randint(-30, 31, (3, SIZE, SIZE), generator=generator)
        images[index] = (torch.where(mask.bool(), sand, sea) + noise).clamp(0, 255).to(torch.uint8)
        masks[index] = mask
    return images, masks


def write_pairs(root: Path, images: torch.Tensor, masks: torch.Tensor) -> Path:
    """The pairs as ``root/images/NNN.png`` and palette-mode ``root/masks/NNN.png``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / "images" / f"{index:03d}.png")
        indexed = Image.fromarray(mask.numpy().astype(np.uint8))
        indexed.putpalette([v for colour in PALETTE for v in colour])  # an L image becomes P, values kept
        indexed.save(root / "masks" / f"{index:03d}.png")
    return root


def calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Give a randomly initialised model the BatchNorm statistics of ``images`` (one forward pass), as a pretrained
    model has statistics of its training data; without them a random ResNeSt's features vanish."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: exactly this batch's statistics
    model.train()
    with torch.no_grad():
        model(images)
    for norm in norms:
        norm.momentum = 0.1
    model.train(was_training)


def fine_tune(model: torch.nn.Module, batch: torch.Tensor, target: torch.Tensor, steps: int) -> list[float]:
    """``steps`` SGD steps (learning rate 0.01, the poly schedule) of ``model`` on one batch; the losses."""
    optimizer = sgd(model, 0.01)
    scheduler = poly_lr_scheduler(optimizer, steps)
    losses = []
    for _ in range(steps):
        loss = segmentation_loss(model(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses
