"""Batch prediction throughput (``resnest_zoo.predict_to_folder``, what ``resnest-zoo predict`` runs) against the
one-at-a-time loop and the network alone; peak host memory as the number of inputs grows.

    python benchmarks/bench_batch_predict.py --output bench_batch_predict.json

1. **Throughput**, on two synthetic folders: ``--png`` Cityscapes-size frames (1024x2048 PNG, DeepLabV3+
   Cityscapes) and ``--jpeg`` photographs (500x375 JPEG, DeepLabV3+ VOC), with random weights and BatchNorm
   folded, at the test-time size ``--resize`` (default 512x256 on a CPU; the published sizes are 2048x1024 and
   2048x512: pass them on a GPU). Three rates, images/s:
   (a) ``loop``: the command line before streaming: ``model.predict(path)`` then ``prediction.save(...)``, one
   file after another;
   (b) ``forward``: the network alone on tensors already on the device, same input size and batch, and
   ``forward_and_resize_back``: plus the logits' resize back to the picture and the argmax (what a mask needs);
   (c) ``stream``: ``predict_to_folder`` (loader workers, batches, background PNG writers).
   The target is ``stream / forward`` of at least 0.95.
2. **Memory**: ``predict_to_folder`` over 100 and 1,000 JPEGs (500x375) in a fresh process each, with a tiny
   network: the process's peak RSS and its DataLoader workers'. Flat means the same peak for both counts.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import (TinySegmentor, add_run_arguments, compute_alone, forward_alone, machine, memory_rows, real_model,
                      sync, write_rank_result)

import torch  # noqa: E402

import resnest_zoo  # noqa: E402
from resnest_zoo.inference.preprocess import keep_ratio_size  # noqa: E402
from test_stream import _picture  # noqa: E402  (tests/test_stream.py: smooth synthetic pictures)

SETS = {"png": ("deeplabv3plus", "cityscapes", (1024, 2048), ".png"),
        "jpeg": ("deeplabv3plus", "voc", (375, 500), ".jpg")}


def write_pictures(folder: Path, count: int, size: tuple[int, int], suffix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}{suffix}"
        Image.fromarray(_picture(size[1], size[0], index)).save(path, **({"quality": 90} if suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def one_at_a_time(model, paths: list[Path], output: Path, device: torch.device) -> float:
    """Images/s of the former command line loop: predict one file, save its mask, next."""
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for path in paths:
        model.predict(path, device=device).save(output / f"{path.stem}.png")
    sync(device)
    return len(paths) / (time.perf_counter() - started)


def memory_run(folder: Path, count: int, workers: int, prefix: str) -> None:
    torch.set_num_threads(1)
    paths = sorted(folder.glob("*.jpg"))[:count]
    with tempfile.TemporaryDirectory() as output:
        summary = resnest_zoo.predict_to_folder(TinySegmentor("voc"), paths, output, workers=workers, batch_size=4)
    write_rank_result(prefix, {"images": summary.done})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--png", type=int, default=6, help="1024x2048 PNG frames")
    parser.add_argument("--jpeg", type=int, default=8, help="500x375 JPEG photographs")
    parser.add_argument("--resize", type=int, nargs=2, default=[512, 256], metavar=("LONG", "SHORT"))
    add_run_arguments(parser, memory=[100, 1000])
    args = parser.parse_args()
    if args.memory_run:
        folder, count, workers, prefix = args.memory_run
        return memory_run(Path(folder), int(count), int(workers), prefix)

    device = torch.device(args.device)
    report: dict = {"command": " ".join(sys.argv), "machine": machine(device), "throughput": []}
    with tempfile.TemporaryDirectory() as base:
        base = Path(base)
        for name, count in (("png", args.png), ("jpeg", args.jpeg)):
            if not count:
                continue
            segmentor, dataset, size, suffix = SETS[name]
            paths = write_pictures(base / name, count, size, suffix)
            model = real_model(segmentor, dataset, tuple(args.resize), device)
            shape = keep_ratio_size(*size, args.resize)
            forward = forward_alone(model, shape, args.batch_size, count, device)
            computed = compute_alone(model, shape, size, args.batch_size, count, device)
            loop = one_at_a_time(model, paths, base / f"{name}-loop", device)
            started = time.perf_counter()
            summary = resnest_zoo.predict_to_folder(model, paths, base / f"{name}-stream", batch_size=args.batch_size,
                                                    workers=args.workers, device=device)
            stream = summary.done / (time.perf_counter() - started)
            same = all(np.array_equal(np.asarray(Image.open(base / f"{name}-loop" / f"{p.stem}.png")),
                                      np.asarray(Image.open(base / f"{name}-stream" / f"{p.stem}.png"))) for p in paths)
            row = {"set": name, "model": f"{segmentor}/{dataset}", "image_size": f"{size[0]}x{size[1]}",
                   "input_size": f"{shape[0]}x{shape[1]}", "batch_size": args.batch_size, "images": count,
                   "loop_images_per_s": round(loop, 4), "forward_images_per_s": round(forward, 4),
                   "forward_and_resize_back_images_per_s": round(computed, 4),
                   "stream_images_per_s": round(stream, 4), "stream_vs_forward": round(stream / forward, 3),
                   "stream_vs_forward_and_resize_back": round(stream / computed, 3),
                   "stream_vs_loop": round(stream / loop, 3), "same_masks": same}
            report["throughput"].append(row)
            print(json.dumps(row), flush=True)
        if args.memory:
            write_pictures(base / "many", max(args.memory), (375, 500), ".jpg")
            report["memory"] = memory_rows(Path(__file__), base / "many", args.memory, args.workers, 1)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
