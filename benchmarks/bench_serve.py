"""``resnest-zoo serve`` under load: throughput and latency at concurrency 1, 4 and 16 against the offline rate of
``predict_stream`` on the same photos and model; dynamic batching against ``--max-batch-size 1``.

    python benchmarks/bench_serve.py                       # a CPU: a few minutes
    python benchmarks/bench_serve.py --device cuda          # the same on a GPU
    python benchmarks/bench_serve.py --model deeplabv3plus/ade20k --device cuda   # a published checkpoint

A real server (``resnest-zoo serve`` in a subprocess on 127.0.0.1) and real clients (threads, one keep-alive
connection each, each sending its next photo as soon as the last answer came). By default the model is the
DeepLabV3+ ResNeSt-101 architecture with random weights (speed does not depend on the weights), saved as a model
folder whose test-time resize is the photos' own size (``--resize``, default 128x96), so that small photos stay
small and a CPU finishes in minutes; ``--model`` serves anything ``-m`` names instead. Reported:

* ``offline``: images/s of ``model.predict_stream(photos, batch_size=--max-batch-size)``, the same model loaded as
  the server loads it (BatchNorm folded), after a warm-up; measured before and after the servers, the better run
  kept (so a busy moment of the machine does not flatter the server);
* per concurrency: requests/s, latency p50/p95/p99, mean images per forward pass and the batch time, mean and p99
  (from the server's ``/metrics`` histogram, as Prometheus' ``histogram_quantile`` reads it);
* ``--max-batch-size 1`` at the highest concurrency, for what batching buys;
* CPU seconds per image, offline (this process and its loader workers) and in the server process: on a machine
  that others load too, the wall-clock rates swing, these much less.

Targets (issue 20): at concurrency 16 the server reaches at least 90% of the offline rate; batching raises
throughput over ``--max-batch-size 1``; p99 latency stays under queue / throughput + one batch time, the queue being
the requests that can wait (``min(--max-queue, concurrency)``) and the batch time its p99. The JSON report
(``--output``, default ``benchmarks/results/bench_serve.json``) has every figure, the machine, and the load average
before and after.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pipeline import REPO_ROOT, machine  # noqa: E402  (benchmarks/pipeline.py: sys.path, the machine)

import requests  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import resnest_zoo  # noqa: E402
from resnest_zoo.catalogue import get_entry  # noqa: E402
from resnest_zoo.models.segmentor import build_segmentor  # noqa: E402
from resnest_zoo.serving.models import load_source, model_sources  # noqa: E402
from serving_helpers import Server, photo  # noqa: E402  (tests/serving_helpers.py)


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(part) for part in text.lower().split("x"))
    return width, height


def make_model(folder: Path, architecture: str, resize: tuple[int, int]) -> Path:
    """The architecture with seeded random weights, predicting at ``resize`` (long, short), saved as a model folder."""
    segmentor, dataset = architecture.split("/")
    entry = get_entry(segmentor, dataset)
    torch.manual_seed(0)
    model = build_segmentor(entry)
    model.config = dataclasses.replace(model.config, preprocessing=dataclasses.replace(
        model.config.preprocessing, resize=(max(resize), min(resize))))
    return model.save_pretrained(folder / "bench-model")


def write_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` JPEG photos, half landscape ``size``, half portrait (two network input sizes)."""
    width, height = size
    paths = []
    for index in range(count):
        w, h = (width, height) if index % 2 == 0 else (height, width)
        path = folder / f"photo{index:03d}.jpg"
        Image.fromarray(photo(w, h, seed=index)).save(path, quality=90)
        paths.append(path)
    return paths


def offline_rate(model, paths: list[Path], batch_size: int, images: int, device: str,
                 workers: int | None = None) -> tuple[float, float]:
    """Images/s of ``predict_stream`` over ``images`` photos (``paths`` repeated), after one warm-up pass, and the
    CPU seconds per image it took (this process and its loader workers): a figure that a busy machine bends less."""
    work = [paths[i % len(paths)] for i in range(images)]
    for _ in model.predict_stream(paths, batch_size=batch_size, device=device, workers=workers):
        pass
    cpu = _own_cpu_seconds()
    began = time.perf_counter()
    count = sum(1 for _ in model.predict_stream(work, batch_size=batch_size, device=device, workers=workers))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return count / (time.perf_counter() - began), (_own_cpu_seconds() - cpu) / count


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the loader's worker processes)."""
    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def _process_cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` so far, all its threads (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def scrape(server: Server, name: str) -> dict:
    """The server's batch counters for model ``name``: batches, images, batch seconds, and the batch-time histogram
    (cumulative count per upper bound)."""
    text = server.get("/metrics").text
    model = re.escape(name)

    def value(metric: str) -> float:
        found = re.search(rf'^{metric}{{model="{model}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    buckets = {float(bound): float(count) for bound, count in re.findall(
        rf'^resnest_zoo_batch_seconds_bucket{{le="([^"]+)",model="{model}"}} (\S+)$', text, re.M)}
    return {"batches": value("resnest_zoo_batch_size_count"), "images": value("resnest_zoo_batch_size_sum"),
            "seconds": value("resnest_zoo_batch_seconds_sum"), "buckets": buckets}


def histogram_quantile(quantile: float, buckets: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile``: linear inside the bucket that holds the quantile."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return 0.0
    rank, lower, below = quantile * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            share = (rank - below) / max(buckets[bound] - below, 1e-12)
            return lower + (bound - lower) * share
        lower, below = bound, buckets[bound]
    return lower


def load_level(server: Server, name: str, bodies: list[bytes], concurrency: int, requests_total: int) -> dict:
    """``requests_total`` requests from ``concurrency`` client threads; throughput, latency, batches."""
    url = f"{server.url}/v1/models/{name}/predict"
    lock = threading.Lock()
    counter = iter(range(requests_total))
    latencies: list[float] = []
    failures: list[int] = []

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                began = time.perf_counter()
                answer = session.post(url, data=bodies[index % len(bodies)], timeout=600)
                seconds = time.perf_counter() - began
                with lock:
                    (latencies.append(seconds) if answer.status_code == 200 else failures.append(answer.status_code))

    before = scrape(server, name)
    cpu = _process_cpu_seconds(server.process.pid)
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    cpu = _process_cpu_seconds(server.process.pid) - cpu
    after = scrape(server, name)
    batches = after["batches"] - before["batches"]
    batch_times = {bound: count - before["buckets"].get(bound, 0.0) for bound, count in after["buckets"].items()}
    ordered = np.sort(np.asarray(latencies))
    return {
        "concurrency": concurrency, "requests": requests_total, "failed": failures,
        "throughput_per_s": len(latencies) / wall,
        "p50_s": float(np.percentile(ordered, 50)), "p95_s": float(np.percentile(ordered, 95)),
        "p99_s": float(np.percentile(ordered, 99)), "max_s": float(ordered[-1]),
        "mean_batch_images": (after["images"] - before["images"]) / batches if batches else 0.0,
        "mean_batch_s": (after["seconds"] - before["seconds"]) / batches if batches else 0.0,
        "p99_batch_s": histogram_quantile(0.99, batch_times),
        "server_cpu_s_per_request": cpu / max(len(latencies), 1),
    }


def run_server(args: argparse.Namespace, model_arg: str, name: str, bodies: list[bytes], log: Path,
               max_batch_size: int, levels: list[int]) -> list[dict]:
    server = Server(["-m", model_arg, "--device", args.device, "--max-batch-size", str(max_batch_size),
                     "--max-queue", str(args.max_queue), "--timeout", "600"], log, isolated=False)
    try:
        server.wait_ready(timeout=1800)
        load_level(server, name, bodies, max(levels), 2 * max(levels))  # warm-up: every batch size seen once
        results = []
        for concurrency in levels:
            result = load_level(server, name, bodies, concurrency, max(args.requests, 2 * concurrency))
            result["max_batch_size"] = max_batch_size
            queue = min(args.max_queue, concurrency)
            result["p99_bound_s"] = queue / result["throughput_per_s"] + result["p99_batch_s"]  # one (long) batch
            results.append(result)
            print(f"  max-batch-size {max_batch_size:>2}  concurrency {concurrency:>2}: "
                  f"{result['throughput_per_s']:6.2f} req/s  p50 {result['p50_s']:.3f} s  p95 {result['p95_s']:.3f} s  "
                  f"p99 {result['p99_s']:.3f} s (bound {result['p99_bound_s']:.3f} s)  "
                  f"batch {result['mean_batch_images']:.1f} images, mean {result['mean_batch_s']:.3f} s, "
                  f"p99 {result['p99_batch_s']:.3f} s; server {result['server_cpu_s_per_request']:.3f} CPU s/request",
                  flush=True)
        return results
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", help="serve this (-m MODEL) instead of the random-weight architecture")
    parser.add_argument("--architecture", default="deeplabv3plus/ade20k", help="SEGMENTOR/DATASET of the default model")
    parser.add_argument("--resize", type=parse_size, default=(128, 96), help="default model's test-time size, WxH")
    parser.add_argument("--photo-size", type=parse_size, default=(128, 96), help="photos' size, WxH (half rotated)")
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level (at least 2x it)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--offline-workers", type=int, help="predict_stream's loader processes (default its own)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "bench_serve.json")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.model:
            model_arg = args.model
            source = model_sources([model_arg])[0]  # the name the server gives it
            name = source.name
            loaded = load_source(source, device=torch.device(args.device))  # as the server loads it
        else:
            model_arg = str(make_model(work, args.architecture, args.resize))
            name = "bench-model"
            loaded = resnest_zoo.from_pretrained(model_arg, device=args.device, optimize=True)
        paths = write_photos(work, args.photos, args.photo_size)
        bodies = [path.read_bytes() for path in paths]
        images = max(args.requests, 2 * max(args.concurrency))
        offline_before, offline_cpu = offline_rate(loaded, paths, args.max_batch_size, images, args.device,
                                                    args.offline_workers)
        print(f"offline predict_stream: {offline_before:.2f} images/s, {offline_cpu:.3f} CPU s/image", flush=True)
        batched = run_server(args, model_arg, name, bodies, work / "batched.log", args.max_batch_size,
                             args.concurrency)
        single = run_server(args, model_arg, name, bodies, work / "single.log", 1, [max(args.concurrency)])
        offline_after, offline_cpu_after = offline_rate(loaded, paths, args.max_batch_size, images, args.device,
                                                        args.offline_workers)
        print(f"offline predict_stream again: {offline_after:.2f} images/s, {offline_cpu_after:.3f} CPU s/image",
              flush=True)
        offline = max(offline_before, offline_after)  # the better of the two: the harder target

    top = batched[-1]
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": {**machine(torch.device(args.device)), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "model": args.model or f"{args.architecture} architecture, random weights, resize {args.resize}",
        "photos": {"count": args.photos, "size": args.photo_size, "format": "JPEG"},
        "device": args.device,
        "offline_images_per_s": offline, "offline_runs_images_per_s": [offline_before, offline_after],
        "offline_cpu_s_per_image": [offline_cpu, offline_cpu_after],
        "server": batched, "server_max_batch_size_1": single,
        "targets": {
            "serving_over_offline_at_top_concurrency": top["throughput_per_s"] / offline,
            "serving_reaches_90_percent_of_offline": top["throughput_per_s"] >= 0.9 * offline,
            "batching_speedup_at_top_concurrency": top["throughput_per_s"] / single[0]["throughput_per_s"],
            "p99_within_bound_at_every_level": all(level["p99_s"] <= level["p99_bound_s"] for level in batched),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    targets = report["targets"]
    print(f"server / offline at concurrency {top['concurrency']}: "
          f"{targets['serving_over_offline_at_top_concurrency']:.2f}; batching "
          f"x{targets['batching_speedup_at_top_concurrency']:.2f} over --max-batch-size 1; p99 within bound: "
          f"{targets['p99_within_bound_at_every_level']}; load average {load_before[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    print(f"report: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
