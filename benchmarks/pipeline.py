"""What ``bench_evaluate.py`` and ``bench_batch_predict.py`` share: the models, the forward-alone reference, the
machine's description, and peak-memory runs in fresh processes (one or several ranks under torchrun).

The synthetic pictures and datasets come from ``tests/synthetic_data.py`` (the layouts the tests use).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for folder in (REPO_ROOT, REPO_ROOT / "benchmarks", REPO_ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402
from memory import peak_rss_mb  # noqa: E402  (benchmarks/memory.py)
from torch import nn  # noqa: E402

from resnest_zoo.catalogue import get_entry  # noqa: E402
from resnest_zoo.devices import cpu_flags  # noqa: E402
from resnest_zoo.models.optimize import optimize_for_inference  # noqa: E402
from resnest_zoo.models.segmentor import Segmentor, build_segmentor  # noqa: E402

__all__ = ["REPO_ROOT", "add_run_arguments", "real_model", "TinySegmentor", "forward_alone", "compute_alone", "machine", "peak_memory_mb",
           "run_ranks", "memory_rows", "write_rank_result", "sync"]


def add_run_arguments(parser: argparse.ArgumentParser, memory: list[int]) -> None:
    """The options both benchmarks take: batch, workers, device, the memory runs' image counts, the report file,
    and the hidden ``--memory-run FOLDER COUNT WORKERS PREFIX`` that :func:`run_ranks` starts."""
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory", type=int, nargs="*", default=memory, help="image counts for the memory part")
    parser.add_argument("--output", type=Path, help="write the report as JSON")
    parser.add_argument("--memory-run", nargs=4, metavar=("FOLDER", "COUNT", "WORKERS", "PREFIX"), help=argparse.SUPPRESS)


def real_model(segmentor: str, dataset: str, resize: tuple[int, int] | None, device: torch.device) -> Segmentor:
    """The catalogue architecture with random weights, BatchNorm folded (as the CLI runs it), its test-time resize
    target replaced by ``resize`` when given (a CPU cannot afford full-size Cityscapes frames many times)."""
    torch.manual_seed(0)
    model = build_segmentor(get_entry(segmentor, dataset)).eval()
    if resize is not None:
        model.config = replace(model.config, preprocessing=replace(model.config.preprocessing, resize=resize))
    return optimize_for_inference(model.to(device))


class TinySegmentor(Segmentor):
    """A stand-in with the Segmentor interface and a dataset's config (one strided conv and a classifier): for
    the memory runs, where what is measured is the pipeline, not the network."""

    def __init__(self, dataset: str, segmentor: str = "fcn") -> None:
        entry = get_entry(segmentor, dataset)
        super().__init__(nn.Sequential(nn.Conv2d(3, 16, 3, stride=8, padding=1), nn.ReLU()), entry.num_classes)
        self.classifier = nn.Conv2d(16, entry.num_classes, 1)
        self.config, self.entry = entry.config, entry

    def decode(self, features):
        return self.classifier(features)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_alone(model: Segmentor, shape: tuple[int, int], batch_size: int, images: int,
                  device: torch.device) -> float:
    """Images/s of the network alone on tensors already prepared on the device (``images`` of ``shape``, in
    batches of ``batch_size``, after one warm-up batch): the rate nothing else in a pipeline can beat."""
    batch = torch.randn(batch_size, 3, *shape, device=device)
    with torch.inference_mode():
        model(batch)
        sync(device)
        started = time.perf_counter()
        for _ in range(max(1, images // batch_size)):
            model(batch)
        sync(device)
    return max(1, images // batch_size) * batch_size / (time.perf_counter() - started)


def compute_alone(model: Segmentor, shape: tuple[int, int], size: tuple[int, int], batch_size: int, images: int,
                  device: torch.device) -> float:
    """Images/s of what a prediction must compute, on tensors already on the device: the forward and the logits'
    resize back to the picture's ``size`` with the argmax (``InferencePlan.labels``, as ``predict`` does). The
    difference from :func:`forward_alone` is that resize; the difference from a pipeline is reading and writing."""
    from resnest_zoo.inference.engine import evaluating, plan_inference

    plan = plan_inference(model, batch_size=batch_size)
    inputs = list(torch.randn(batch_size, 3, *shape, device=device).split(1))
    with evaluating(model):
        plan.labels(model, device, inputs, [size] * batch_size)
        sync(device)
        started = time.perf_counter()
        for _ in range(max(1, images // batch_size)):
            plan.labels(model, device, inputs, [size] * batch_size)
        sync(device)
    return max(1, images // batch_size) * batch_size / (time.perf_counter() - started)


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16",
             "amx_fp16", "amx_int8")
"""The CPU flags that decide float32, bfloat16, float16 and int8 speed, recorded with every benchmark figure."""


def speed_flags() -> list[str]:
    """This CPU's flags among :data:`CPU_FLAGS`, as the package reads them (``resnest_zoo.devices.cpu_flags``)."""
    present = cpu_flags()
    return [flag for flag in CPU_FLAGS if flag in present]


def machine(device: torch.device) -> dict[str, str]:
    """The CPU (model and the flags that matter for speed), GPU, torch and Python of this run."""
    cpu = platform.processor() or "unknown CPU"
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        cpu = fields.get("Model name", cpu).strip()
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_flags": " ".join(speed_flags()), "cpus": str(len(os.sched_getaffinity(0))),
            "threads": str(torch.get_num_threads()), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (``VmHWM``) and of its largest finished child (the DataLoader
    workers, whose figure includes the pages they share with this process), MiB."""
    return {"self": peak_rss_mb(), "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run_ranks(script: Path, args: list[str], processes: int) -> list[dict]:
    """Run ``script ARGS RESULT_PREFIX`` in fresh processes (under torchrun when ``processes`` > 1, Gloo on the
    CPU); each rank writes its JSON result to ``RESULT_PREFIX.rank<N>.json`` (:func:`write_rank_result`); those."""
    with tempfile.TemporaryDirectory() as folder:
        prefix = str(Path(folder) / "result")
        command = [sys.executable, str(script), *args, prefix]
        if processes > 1:
            command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        return [json.loads(Path(f"{prefix}.rank{rank}.json").read_text()) for rank in range(processes)]


def memory_rows(script: Path, folder: Path, counts: list[int], workers: int | None, processes: int) -> list[dict]:
    """For each image count, ``script --memory-run`` in fresh processes: each rank's peak RSS and its workers';
    printed as they come and returned."""
    rows = []
    for count in counts:
        ranks = run_ranks(script, ["--memory-run", str(folder), str(count), str(1 if workers is None else workers)],
                          processes)
        row = {"images": count, "processes": processes,
               "peak_mib_per_rank": [round(r["peak_mib"]["self"], 1) for r in ranks],
               "worker_peak_mib_per_rank": [round(r["peak_mib"]["workers"], 1) for r in ranks]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def write_rank_result(prefix: str, result: dict) -> None:
    """This rank's part of a :func:`run_ranks` run, with its peak memory."""
    rank = int(os.environ.get("RANK", "0"))
    Path(f"{prefix}.rank{rank}.json").write_text(json.dumps({**result, "rank": rank, "peak_mib": peak_memory_mb()}))
