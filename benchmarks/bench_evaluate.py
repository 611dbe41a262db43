"""Evaluation throughput against the network alone, and peak memory per rank as the dataset grows.

    python benchmarks/bench_evaluate.py --output bench_evaluate.json

1. **Throughput.** A synthetic Cityscapes folder of ``--images`` frames of ``--image-size`` (default 1024x2048,
   the real frames: PNG decoding and resizing cost what they cost on real data) is evaluated by
   ``resnest_zoo.evaluate`` with the ``--segmentor``/``--dataset`` architecture (random weights, BatchNorm
   folded, as ``resnest-zoo eval`` runs it), at the test-time size ``--resize`` (default 512x256 on a CPU: a
   full 2048x1024 forward takes about 45 s there; on a GPU pass ``--resize 2048 1024``). The reference rate is
   the same network's forward alone on tensors already on the device, at the same input size and batch (and, to
   tell the costs apart, the forward plus the logits' resize back to the frame with the argmax, which evaluation
   must compute too). The target is ``evaluate / forward`` of at least 0.95: reading, resizing, the resize back and
   the metric hidden behind the network (on a CPU the resize back shares the cores with the network; see
   docs/performance.md).
2. **Memory.** ``resnest_zoo.evaluate`` over the first 50 and 500 images of a synthetic folder, each in fresh
   processes under ``torchrun --nproc-per-node --processes`` (Gloo on a CPU), with a tiny network (what grows or
   not is the pipeline's memory, not the network's): each rank's peak RSS, and its DataLoader workers'. Flat means
   the 500-image peak is within a few MiB of the 50-image one.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from pipeline import (TinySegmentor, add_run_arguments, compute_alone, forward_alone, machine, memory_rows, real_model,
                      write_rank_result)

import torch  # noqa: E402

import resnest_zoo  # noqa: E402
from resnest_zoo.inference.preprocess import keep_ratio_size  # noqa: E402
from synthetic_data import write_cityscapes  # noqa: E402  (tests/synthetic_data.py)


def memory_run(root: Path, count: int, workers: int, prefix: str) -> None:
    """One rank of a memory measurement: evaluate the first ``count`` images, record peak memory."""
    torch.set_num_threads(1)
    result = resnest_zoo.evaluate(TinySegmentor("cityscapes", "deeplabv3plus"), root, limit=count, workers=workers,
                                  batch_size=4)
    write_rank_result(prefix, {"images": result.images})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segmentor", default="deeplabv3plus")
    parser.add_argument("--dataset", default="cityscapes", choices=["cityscapes"])
    parser.add_argument("--image-size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"))
    parser.add_argument("--resize", type=int, nargs=2, default=[512, 256], metavar=("LONG", "SHORT"),
                        help="test-time keep-ratio target (the published one is 2048 1024)")
    parser.add_argument("--images", type=int, default=12, help="images for the throughput part (0: skip it)")
    parser.add_argument("--processes", type=int, default=2, help="ranks of the memory runs (torchrun)")
    add_run_arguments(parser, memory=[50, 500])
    args = parser.parse_args()
    if args.memory_run:
        root, count, workers, prefix = args.memory_run
        return memory_run(Path(root), int(count), int(workers), prefix)

    device = torch.device(args.device)
    report: dict = {"command": " ".join(sys.argv), "machine": machine(device)}
    with tempfile.TemporaryDirectory() as folder:
        height, width = args.image_size
        if args.images:
            root = write_cityscapes(Path(folder) / "frames", count=args.images, sizes=[(width, height)])
            model = real_model(args.segmentor, args.dataset, tuple(args.resize), device)
            shape = keep_ratio_size(height, width, args.resize)
            alone = forward_alone(model, shape, args.batch_size, args.images, device)
            computed = compute_alone(model, shape, (height, width), args.batch_size, args.images, device)
            resnest_zoo.evaluate(model, root, limit=args.batch_size, batch_size=args.batch_size, workers=0)  # warm-up
            started = time.perf_counter()
            result = resnest_zoo.evaluate(model, root, batch_size=args.batch_size, workers=args.workers, device=device)
            evaluated = result.images / (time.perf_counter() - started)
            report["throughput"] = {
                "model": f"{args.segmentor}/{args.dataset}", "image_size": f"{height}x{width}",
                "input_size": f"{shape[0]}x{shape[1]}", "batch_size": args.batch_size, "images": result.images,
                "forward_alone_images_per_s": round(alone, 4),
                "forward_and_resize_back_images_per_s": round(computed, 4),
                "evaluate_images_per_s": round(evaluated, 4), "evaluate_vs_forward": round(evaluated / alone, 3),
                "evaluate_vs_forward_and_resize_back": round(evaluated / computed, 3),
            }
            print(json.dumps(report["throughput"]), flush=True)

        if args.memory:
            small = write_cityscapes(Path(folder) / "many", count=max(args.memory), sizes=[(512, 256), (384, 192)])
            report["memory"] = memory_rows(Path(__file__), small, args.memory, args.workers, args.processes)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
