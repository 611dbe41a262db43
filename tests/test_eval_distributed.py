"""Evaluation under the real launcher: ``python -m torch.distributed.run --nproc-per-node 2`` (Gloo, CPU) gives
exactly the confusion matrix of one process, with every image counted once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic_data import synthetic_datasets  # noqa: F401  (fixture)

JOBS = Path(__file__).with_name("distributed_jobs.py")


def launch(*args: str, processes: int, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``distributed_jobs.py ARGS`` alone (1 process) or under torchrun (several), on the CPU."""
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    if processes == 1:
        command = [sys.executable, str(JOBS), *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(processes), str(JOBS), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_two_processes_give_the_confusion_matrix_of_one(synthetic_datasets, tmp_path):
    root = synthetic_datasets["ade20k"]  # five images: shards of 3 and 2, nothing repeated to even them out
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    launch("eval", "ade20k", str(root), str(one), "0", processes=1)
    launch("eval", "ade20k", str(root), str(two), "1", processes=2)
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert single["processes"] == 1 and double["processes"] == 2
    assert double["confusion"] == single["confusion"] and double["images"] == single["images"] == 5
    forwarded = [int(Path(f"{two}.rank{rank}").read_text()) for rank in (0, 1)]
    assert sorted(forwarded) == [2, 3]  # disjoint shards covering every image exactly once
