"""Several processes, one run: which process this is, which device it uses, its share of the work, one final sum.

Processes are started by ``torchrun`` (``python -m torch.distributed.run``), never by this package: torchrun sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` for each process it starts (and ``MASTER_ADDR``/``MASTER_PORT``, which
``torch.distributed`` reads itself); without them a run is one process. This module is the only one that reads
these variables (through :mod:`resnest_zoo.environment`) or talks to ``torch.distributed``.

The work is split by :func:`shard`: item ``i`` of the (sorted) work list goes to rank ``i % world_size``. Every
item has exactly one rank, no item is repeated to even the shares out (unlike ``DistributedSampler``'s padding),
and a shard mixes items from the whole list, so a folder of large pictures is not all given to one rank. The only
traffic between ranks is the process group's start and one :func:`all_reduce_sum` at the end of a run.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from . import environment
from .devices import default_device
from .errors import ConfigurationError

__all__ = ["Ranks", "ranks_from_environment", "shard", "device_for", "process_group", "all_reduce_sum",
           "COLLECTIVE_TIMEOUT"]

T = TypeVar("T")

COLLECTIVE_TIMEOUT = timedelta(hours=24)
"""How long a rank waits for the others in the final sum: ranks that finish their share early wait for the slowest
(a rank that fails ends the whole run through torchrun instead, so this never turns a failure into a hang)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` of
    ``local_world_size`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes the run's results."""
        return self.rank == 0


def ranks_from_environment() -> Ranks:
    """The :class:`Ranks` torchrun set in the environment; one process (rank 0 of 1) when none is set."""
    raw = {variable.name: variable.raw() for variable in environment.LAUNCHER_VARIABLES}
    if all(value is None for value in raw.values()):
        return Ranks()
    missing = [name for name, value in raw.items() if value is None]
    if missing:
        shown = ", ".join(f"{name}={value}" for name, value in raw.items() if value is not None)
        raise ConfigurationError(f"found {shown} but not {', '.join(missing)}: torchrun sets RANK, WORLD_SIZE and "
                                 f"LOCAL_RANK together; start the command with torchrun, or unset them to run one process")
    rank, world_size, local_rank = (int(environment.number(variable, 0, int)) for variable in environment.LAUNCHER_VARIABLES)
    if world_size < 1 or rank >= world_size or local_rank > rank:
        raise ConfigurationError(f"RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank} are inconsistent: "
                                 f"expected 0 <= LOCAL_RANK <= RANK < WORLD_SIZE, as torchrun sets them")
    local_world_size = int(environment.number(environment.LOCAL_WORLD_SIZE, 1, int, minimum=1))
    return Ranks(rank, world_size, local_rank, local_world_size)


def shard(items: Sequence[T], ranks: Ranks) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item from position ``rank``; disjoint, complete."""
    return list(items[ranks.rank::ranks.world_size])


def device_for(requested: str | torch.device | None, ranks: Ranks) -> torch.device:
    """The device this rank computes on: ``requested`` (default: CUDA when available, else CPU); on CUDA in a
    run of several processes, the GPU ``LOCAL_RANK`` of this node (an explicit other index is refused)."""
    device = torch.device(requested) if requested is not None else default_device()
    if device.type != "cuda" or not ranks.distributed:
        return device
    if device.index is not None and device.index != ranks.local_rank:
        raise ConfigurationError(f"device {device} was asked for, but under torchrun each process uses the GPU of its "
                                 f"LOCAL_RANK (cuda:{ranks.local_rank} here); pass --device cuda, and choose GPUs "
                                 f"with CUDA_VISIBLE_DEVICES")
    return torch.device("cuda", ranks.local_rank)


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[Ranks]:
    """Within the block, this process is in the run's process group: NCCL when it computes on a GPU, Gloo on a CPU.

    Nothing happens for a run of one process, or when the caller already started a group (then it is theirs to
    end, and its rank and size must be those of the environment). The group is left when the block ends.
    """
    if not ranks.distributed:
        yield ranks
        return
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (ranks.rank, ranks.world_size):
            raise ConfigurationError(f"the process group already started is rank {dist.get_rank()} of "
                                     f"{dist.get_world_size()}, but the environment says {ranks.rank} of {ranks.world_size}")
        yield ranks
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every rank, in place (unchanged in a run of one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            summed = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(summed)
            tensor.copy_(summed)
        else:
            dist.all_reduce(tensor)
    return tensor
