"""First load (published .pth with optimizer state) vs cached load (model-only safetensors copy): time and peak RSS.

    .venv/bin/python benchmarks/bench_loading.py --output bench_loading.json

Writes a full-size checkpoint in the published training layout ({'model', 'epoch', 'optimizer'}, seeded random
weights) into a work folder, places it in a private cache folder as if downloaded, then times, each in a fresh
process (so peak RSS is that of one load) and ``--repeat`` times (median reported):

* ``pth_first_load``  -- ``load()`` with only the .pth cached: sha256 check, ``torch.load(weights_only=True,
  mmap=True)``, writing the safetensors copy, copying into the model;
* ``pth_weights``     -- ``load(weights=path.pth)``: reading the published file alone, no hashing, no copy;
* ``cached_load``     -- ``load()`` once the safetensors copy exists (what every later load does);
* ``build_only``      -- ``build()``: the architecture with random initialisation and no checkpoint at all,
  the floor under any ``load()`` (``load`` mode only).

Each is measured twice: ``state_dict`` (``checkpoint_state_dict`` only; safetensors and mmap'd tensors are
read lazily, so this mostly times opening and checking) and ``load`` (architecture built and weights copied
in: the time a user waits). Files are in the page cache (warm): network time is not included, disk speed
barely. Peak RSS is the process's high-water mark (``VmHWM``) after the call, ``+RSS`` its rise during it.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memory import peak_rss_mb  # benchmarks/memory.py (this folder is on sys.path when run as a script)

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("pth_first_load", "pth_weights", "cached_load", "build_only")
MODES = ("state_dict", "load")


def child(scenario: str, mode: str, segmentor: str, dataset: str, pth: Path, cache: Path) -> dict:
    """Runs in a fresh process: one timed load."""
    import warnings

    import torch

    import resnest_zoo
    from resnest_zoo.models.strict import fits
    from resnest_zoo.weights.cache import safetensors_path
    from resnest_zoo.weights.sources import SourceSettings, checkpoint_state_dict
    from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning

    warnings.simplefilter("ignore", UnpinnedCheckpointWarning)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    entry = resnest_zoo.get_entry(segmentor, dataset)
    copy = safetensors_path(cache, entry)
    if scenario == "pth_first_load":
        copy.unlink(missing_ok=True)
    elif scenario == "cached_load" and not copy.exists():
        raise SystemExit("cached_load needs the safetensors copy; run pth_first_load first")
    weights = str(pth) if scenario == "pth_weights" else None
    offline = SourceSettings(offline=True)  # never the network: the .pth is already in the cache
    baseline = peak_rss_mb()
    start = time.perf_counter()
    if scenario == "build_only":
        model = resnest_zoo.build(segmentor, dataset)
        seconds = time.perf_counter() - start
        source = "random initialisation"
        checksum = None
    elif mode == "state_dict":
        state, source, _ = checkpoint_state_dict(entry, check=fits(entry), weights=weights, cache_dir=cache,
                                                 progress=False, settings=offline)
        checksum = float(sum(float(v.float().sum()) for k, v in state.items() if k.startswith("decoder.")))
        seconds = time.perf_counter() - start
    else:
        import os

        os.environ["RESNEST_ZOO_OFFLINE"] = "1"
        model = resnest_zoo.load(segmentor, dataset, weights=weights, cache_dir=cache, device="cpu", progress=False)
        seconds = time.perf_counter() - start
        source = "model"
        checksum = float(sum(float(p.float().sum()) for n, p in model.state_dict().items() if n.startswith("decoder.")))
    return {"scenario": scenario, "mode": mode, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "rss_rise_mb": peak_rss_mb() - baseline, "source": source, "checksum": checksum}


def _run_child(args: argparse.Namespace, scenario: str, mode: str, pth: Path, cache: Path) -> dict:
    command = [sys.executable, __file__, "--child", scenario, mode, "--segmentor", args.segmentor,
               "--dataset", args.dataset, "--pth", str(pth), "--cache", str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{scenario}/{mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import shutil

    from conftest import random_segmentor, save_published_checkpoint

    import resnest_zoo

    entry = resnest_zoo.get_entry(args.segmentor, args.dataset)
    pth = work / entry.filename
    if not pth.exists():
        print(f"writing a full-size {entry.filename} with optimizer state into {work} ...", flush=True)
        model = random_segmentor(entry.segmentor, entry.dataset, seed=0)
        save_published_checkpoint(model, pth, with_optimizer=True)
        del model
    cache = work / "cache"
    cache.mkdir(exist_ok=True)
    shutil.copyfile(pth, cache / entry.filename)  # as if downloaded
    return pth, cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segmentor", default="deeplabv3plus")
    parser.add_argument("--dataset", default="cityscapes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--workdir", help="folder for the checkpoint and cache (default: a temporary folder)")
    parser.add_argument("--output", default="bench_loading.json", help="JSON results file")
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--pth", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.segmentor, args.dataset, Path(args.pth), Path(args.cache))))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_loading-") as scratch:
        work = Path(args.workdir) if args.workdir else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        pth, cache = _prepare(args, work)
        runs: list[dict] = []
        for mode in MODES:
            for _ in range(args.repeat):
                for scenario in SCENARIOS:  # interleaved, so drift affects all alike
                    if scenario == "build_only" and mode != "load":
                        continue
                    runs.append(_run_child(args, scenario, mode, pth, cache))
        checksums = {(r["mode"]): set() for r in runs}
        for r in runs:
            if r["checksum"] is not None:
                checksums[r["mode"]].add(round(r["checksum"], 3))
        assert all(len(v) == 1 for v in checksums.values()), f"scenarios loaded different weights: {checksums}"
        summary = []
        for mode in MODES:
            for scenario in SCENARIOS:
                chosen = [r for r in runs if r["mode"] == mode and r["scenario"] == scenario]
                if not chosen:
                    continue
                summary.append({
                    "mode": mode, "scenario": scenario,
                    "seconds": statistics.median(r["seconds"] for r in chosen),
                    "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in chosen),
                    "rss_rise_mb": statistics.median(r["rss_rise_mb"] for r in chosen),
                })
        sizes = {"pth_mb": pth.stat().st_size / 2**20,
                 "safetensors_mb": next(cache.glob("*.safetensors")).stat().st_size / 2**20}

    print(f"\n{args.segmentor}/{args.dataset}: .pth {sizes['pth_mb']:.0f} MiB (with optimizer state), "
          f"safetensors copy {sizes['safetensors_mb']:.0f} MiB; median of {args.repeat}, warm page cache\n")
    print(f"{'mode':<11}{'scenario':<16}{'seconds':>9}{'speed-up':>10}{'peak RSS MiB':>14}{'+RSS MiB':>10}")
    for row in summary:
        base = next(r for r in summary if r["mode"] == row["mode"] and r["scenario"] == "pth_first_load")
        row["speedup_vs_first_load"] = base["seconds"] / row["seconds"]
        print(f"{row['mode']:<11}{row['scenario']:<16}{row['seconds']:>9.3f}{row['speedup_vs_first_load']:>9.1f}x"
              f"{row['peak_rss_mb']:>14.0f}{row['rss_rise_mb']:>10.0f}")
    report = {"segmentor": args.segmentor, "dataset": args.dataset, "repeat": args.repeat, **sizes,
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": __import__("os").cpu_count()},
              "summary": summary, "runs": runs}
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
