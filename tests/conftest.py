"""Shared fixtures: models built once per session and checkpoints written in the published layout."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnest_zoo.catalogue import catalogue, get_entry
from resnest_zoo.models.segmentor import Segmentor, build_segmentor

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_TABLE = REPO_ROOT.parent / "shared" / "seeds" / "000_10a53fa0591d911b.txt"

torch.set_num_threads(max(1, torch.get_num_threads()))


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics (sane ranges)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.num_batches_tracked.fill_(1000)
    return model


def random_segmentor(segmentor: str, dataset: str, *, seed: int = 0, auxiliary_head: bool = True) -> Segmentor:
    """A catalogue architecture with seeded random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_segmentor(get_entry(segmentor, dataset), auxiliary_head=auxiliary_head)
    return randomize_batchnorm(model, seed).eval()


def save_published_checkpoint(model: torch.nn.Module, path: Path, *, with_optimizer: bool = False) -> Path:
    """Write ``model`` as sssegmentation does: ``{'model': state_dict}``, plus epoch and SGD momentum
    buffers (as large again as the model) for a file saved straight from training."""
    state = {"model": model.state_dict()}
    if with_optimizer:
        params = [p for p in model.parameters()]
        state["epoch"] = 60
        state["optimizer"] = {
            "state": {i: {"momentum_buffer": torch.zeros_like(p)} for i, p in enumerate(params)},
            "param_groups": [{"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "params": list(range(len(params)))}],
        }
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def published_checkpoint(tmp_path_factory):
    """Factory ``(segmentor, dataset, with_optimizer=False) -> (path, model)``; each file is written once."""
    made: dict[tuple[str, str, bool], tuple[Path, Segmentor]] = {}
    folder = tmp_path_factory.mktemp("published")

    def make(segmentor: str, dataset: str, *, with_optimizer: bool = False) -> tuple[Path, Segmentor]:
        key = (segmentor, dataset, with_optimizer)
        if key not in made:
            entry = get_entry(segmentor, dataset)
            # the seed depends on the file alone, not on which tests ran before: the same weights in every run
            seed = 1 + sorted(catalogue()).index(entry.key) + 100 * with_optimizer
            model = random_segmentor(entry.segmentor, entry.dataset, seed=seed)
            path = save_published_checkpoint(model, folder / f"{len(made)}-{entry.filename}", with_optimizer=with_optimizer)
            made[key] = (path, model)
        return made[key]

    return make
