"""The published optimiser and learning-rate schedule: SGD with momentum, poly decay per iteration."""
from __future__ import annotations

import torch
from torch import nn

from .recipe import MIN_LR_RATIO, MOMENTUM, POLY_POWER, WEIGHT_DECAY

__all__ = ["sgd", "poly_lr_scheduler"]


def sgd(model: nn.Module, lr: float) -> torch.optim.SGD:
    """SGD over the parameters that train (frozen ones are left out), with the published momentum and weight decay."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    return torch.optim.SGD(parameters, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def poly_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, *, power: float = POLY_POWER,
                      min_lr_ratio: float = MIN_LR_RATIO) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly decay as the reference's ``PolyScheduler``: after ``step`` calls of ``scheduler.step()`` (one per
    iteration), ``lr = (lr0 - min_lr) * (1 - step / total_steps) ** power + min_lr`` with ``min_lr = lr0 *
    min_lr_ratio``; it stays at ``min_lr`` past ``total_steps``."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer (iterations in the whole run), got {total_steps!r}")

    def factor(step: int) -> float:
        return (1 - min_lr_ratio) * (1 - min(step, total_steps) / total_steps) ** power + min_lr_ratio

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
