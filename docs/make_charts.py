"""Bar charts of the benchmarks' JSON reports, for the Performance page.

    python docs/make_charts.py            # docs/data/<machine>/bench_<name>.json -> docs/images/charts/<machine>-<name>.svg
    python docs/make_charts.py --check    # exit 1 if a chart is missing or differs from what its JSON gives

Each report is the file a benchmark writes with ``--output`` (``benchmarks/bench_inference.py``,
``bench_loading.py``, ``bench_batch_predict.py``, ``bench_evaluate.py``), kept under ``docs/data/<machine>/``.
The machine comes from the report's own record (``machine``) where it names the CPU and its flags, else from
``docs/data/<machine>/machine.json`` beside it (``bench_loading.py`` records no CPU), which also says how loaded
the shared machine was. Every chart states the machine, its CPU flags and the precision path, and writes each bar's
value as text (SVG ``<text>``, so the tests can read it back). A report of another benchmark, or one without a
machine, is an error: nothing is skipped silently.

Needs matplotlib (the ``docs`` extra).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"
CHARTS = ROOT / "docs" / "images" / "charts"
if str(ROOT / "docs") not in sys.path:  # generated.py, beside this script
    sys.path.insert(0, str(ROOT / "docs"))

from generated import update  # noqa: E402
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def value_text(value: float) -> str:
    """How a bar's value is written on the chart: three significant digits."""
    return f"{value:.3g}"


@dataclass
class Bars:
    """One panel: labelled bars of one quantity."""

    title: str
    unit: str  # the x axis: "seconds (lower is faster)" ...
    labels: list[str]
    values: list[float]
    notes: list[str]  # written after each value, e.g. "1.24x the reference"; "" for none


@dataclass
class Chart:
    title: str
    machine: str  # CPU (and GPU), flags, torch
    precision: str  # the precision path / dispatched ISA
    load: str  # how busy the machine was ("" when not recorded)
    panels: list[Bars]


def machine_of(report: dict[str, Any], folder: Path) -> tuple[str, str]:
    """``(machine, load)`` lines for a report: its own record where it names the CPU and flags, else machine.json."""
    record = dict(report.get("machine") or {})
    side = folder / "machine.json"
    extra = json.loads(side.read_text(encoding="utf-8")) if side.exists() else {}
    model = record.get("cpu_model") or record.get("cpu") or extra.get("cpu_model")
    # a report may record only some flags: the union with machine.json's, in FLAGS' order
    flags = [*_flag_list(record.get("cpu_flags")), *_flag_list(extra.get("cpu_flags"))] or None
    if not model or flags is None:
        raise SystemExit(f"{folder}: the report names no CPU and flags, and there is no machine.json beside it "
                         "saying what machine it was measured on")
    flags = [f for f in FLAGS if f in flags]
    cpus = record.get("cpus") or extra.get("cpus")
    gpu = record.get("gpu") or extra.get("gpu")
    torch = record.get("torch") or extra.get("torch")
    line = f"{model}" + (f", {cpus} CPUs" if cpus else "") + f"; flags {' '.join(flags) or 'none of ' + ' '.join(FLAGS[:3])}"
    line += "" if "amx_tile" in flags else " (no AMX)"
    line += (f"; GPU {gpu}" if gpu else "") + (f"; torch {torch}" if torch else "")
    before, after = record.get("load_average_before"), record.get("load_average_after")
    load = ""
    if before and after:
        load = f"load average {before[0]:.2f} before, {after[0]:.2f} after (1 min)"
    else:
        recorded = (extra.get("load_average") or {}).get(report.get("_file", ""))
        if recorded:
            load = (f"load average {recorded['before'][0]:.2f} before, {recorded['after'][0]:.2f} after (1 min), "
                    f"{recorded.get('date', '')}").rstrip(", ")
    note = (extra.get("notes") or {}).get(report.get("_file", ""))
    if note:
        load = "; ".join(part for part in (load, note) if part)
    return line, load


def _flag_list(flags: str | list[str] | None) -> list[str]:
    return flags.split() if isinstance(flags, str) else list(flags or [])


def inference(report: dict[str, Any]) -> tuple[str, str, list[Bars]]:
    """``bench_inference.py``: median seconds per variant, one panel per case."""
    panels = []
    for case in report["cases"]:
        rows = case["variants"]
        panels.append(Bars(
            title=f"{case['segmentor']} {case['batch']}x{case['height']}x{case['width']}, "
                  f"{case['gflop_per_forward']:.0f} GFLOP per forward",
            unit="median seconds per forward (lower is faster)",
            labels=[f"{r['variant']} ({r['dtype']}, {r['backend']})" for r in rows],
            values=[r["median_s"] for r in rows],
            notes=[(f"{r['vs_ref']:.2f}x ref" if r.get("vs_ref") else "")
                   + (f", {r['percent_of_peak']:.0f}% peak" if r.get("percent_of_peak") is not None else "")
                   for r in rows]))
    machine = report["machine"]
    dtypes = sorted({r["dtype"] for case in report["cases"] for r in case["variants"]})
    native = machine.get("native") or {}
    precision = ("precision: " + ", ".join(  # native: what bench_inference.py found for float16 / bfloat16
        f"{d}" + ("" if d == "float32" or d not in native else " (native)" if native[d] else " (emulated)")
        for d in dtypes) + f"; PyTorch CPU kernels {machine.get('cpu_capability', '?')}"
        + (f"; device {machine['device']}" if machine.get("device") else ""))
    return f"Forward pass ({report.get('command', 'bench_inference.py')})", precision, panels


def loading(report: dict[str, Any]) -> tuple[str, str, list[Bars]]:
    """``bench_loading.py``: median seconds per scenario, one panel per mode."""
    panels = []
    for mode, title in (("state_dict", "tensors only (checkpoint_state_dict)"), ("load", "load(): model built and filled")):
        rows = [r for r in report["summary"] if r["mode"] == mode]
        panels.append(Bars(title=title, unit="median seconds (lower is faster)",
                           labels=[r["scenario"] for r in rows], values=[r["seconds"] for r in rows],
                           notes=[f"{r['speedup_vs_first_load']:.1f}x first load" for r in rows]))
    precision = (f"precision: float32 tensors; {report['pth_mb']:.0f} MiB .pth (optimizer state) vs "
                 f"{report['safetensors_mb']:.0f} MiB safetensors copy; warm page cache, median of {report['repeat']}")
    return f"Checkpoint loading, {report['segmentor']}/{report['dataset']} (bench_loading.py)", precision, panels


def batch_predict(report: dict[str, Any]) -> tuple[str, str, list[Bars]]:
    """``bench_batch_predict.py``: images/s of each way to segment a folder, one panel per folder."""
    panels = []
    for row in report["throughput"]:
        keys = (("loop_images_per_s", "one file at a time"), ("forward_images_per_s", "network alone"),
                ("forward_and_resize_back_images_per_s", "network + resize back"),
                ("stream_images_per_s", "predict_to_folder"))
        panels.append(Bars(title=f"{row['images']} x {row['image_size']} ({row['model']}, network input "
                                 f"{row['input_size']}, batch {row['batch_size']})",
                           unit="images/s (higher is faster)", labels=[k[1] for k in keys],
                           values=[row[k[0]] for k in keys],
                           notes=[f"{row[k[0]] / row['forward_images_per_s']:.2f} of the network alone" for k in keys]))
    return "Batch prediction (bench_batch_predict.py)", "precision: float32, BatchNorm folded", panels


def evaluate(report: dict[str, Any]) -> tuple[str, str, list[Bars]]:
    """``bench_evaluate.py``: images/s of evaluate against the forward alone."""
    row = report["throughput"]
    keys = (("forward_alone_images_per_s", "network forward alone"),
            ("forward_and_resize_back_images_per_s", "forward + resize back + argmax"),
            ("evaluate_images_per_s", "resnest_zoo.evaluate"))
    alone = row["forward_alone_images_per_s"]
    panel = Bars(title=f"{row['images']} frames {row['image_size']} ({row['model']}, network input "
                       f"{row['input_size']}, batch {row['batch_size']})",
                 unit="images/s (higher is faster)", labels=[k[1] for k in keys], values=[row[k[0]] for k in keys],
                 notes=[f"{row[k[0]] / alone:.2f} of the forward alone" for k in keys])
    return "Evaluation (bench_evaluate.py)", "precision: float32, BatchNorm folded", [panel]


def serve(report: dict[str, Any]) -> tuple[str, str, list[Bars]]:
    """``bench_serve.py``: requests/s at each concurrency against the offline rate, and p99 against its bound."""
    offline = report["offline_images_per_s"]
    levels = [*report["server"], *({**row, "single": True} for row in report["server_max_batch_size_1"])]
    labels = [f"{row['concurrency']} clients" + (", --max-batch-size 1" if row.get("single") else "") for row in levels]
    rate = Bars(title=f"requests/s ({report['photos']['count']} JPEG photos {report['photos']['size'][0]}x"
                      f"{report['photos']['size'][1]}; offline predict_stream: {value_text(offline)} images/s)",
                unit="requests/s (higher is better)", labels=["offline predict_stream", *labels],
                values=[offline, *(row["throughput_per_s"] for row in levels)],
                notes=["1.00 of offline", *(f"{row['throughput_per_s'] / offline:.2f} of offline, "
                                            f"{row['mean_batch_images']:.1f} images per batch" for row in levels)])
    tail = Bars(title="p99 latency, seconds (the bound: requests that can wait / throughput + one batch's p99)",
                unit="seconds (lower is better)", labels=labels, values=[row["p99_s"] for row in levels],
                notes=[f"bound {value_text(row['p99_bound_s'])} s" if "p99_bound_s" in row else "" for row in levels])
    return (f"Serving (bench_serve.py), {report['model']}", f"precision: float32 on {report['device']}",
            [rate, tail])


DRAWERS: dict[str, Callable[[dict[str, Any]], tuple[str, str, list[Bars]]]] = {
    "inference": inference,
    "loading": loading,
    "batch_predict": batch_predict,
    "evaluate": evaluate,
    "serve": serve,
}


def reports() -> list[Path]:
    """Every kept report: ``docs/data/<machine>/bench_<name>.json``."""
    return sorted(DATA.glob("*/bench_*.json"))


def chart_path(report: Path) -> Path:
    return CHARTS / f"{report.parent.name}-{report.stem.removeprefix('bench_')}.svg"


def chart(report_path: Path) -> Chart:
    """What the chart of one report shows (also what the tests check the SVG against)."""
    name = report_path.stem.removeprefix("bench_")
    if name not in DRAWERS:
        raise SystemExit(f"{report_path}: no chart is known for bench_{name}.json; known: "
                         f"{', '.join('bench_' + n + '.json' for n in DRAWERS)} (add a drawer to docs/make_charts.py)")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["_file"] = report_path.name
    machine, load = machine_of(report, report_path.parent)  # first: a report without a machine is refused as such
    title, precision, panels = DRAWERS[name](report)
    return Chart(title=title, machine=machine, precision=precision, load=load, panels=panels)


def render(spec: Chart) -> str:
    """The chart as SVG text: fonts as text (not paths), no date, fixed ids, so the same report gives the same file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "resnest_zoo", "font.size": 9,
                         "font.family": "DejaVu Sans"})
    heights = [0.5 + 0.32 * len(p.values) for p in spec.panels]
    figure, axes = plt.subplots(len(spec.panels), 1, figsize=(9, 1.3 + sum(heights) + 0.6 * len(spec.panels)),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for axis, panel in zip(axes[:, 0], spec.panels):
        positions = range(len(panel.values))
        axis.barh(list(positions), panel.values, color="#3f51b5", height=0.6)
        axis.set_yticks(list(positions), panel.labels)
        axis.invert_yaxis()
        axis.set_title(panel.title, loc="left", fontsize=9)
        axis.set_xlabel(panel.unit)
        top = max(panel.values) if panel.values else 1
        axis.set_xlim(0, top * 1.45)
        for y, value, note in zip(positions, panel.values, panel.notes):
            axis.text(value + top * 0.01, y, value_text(value) + (f"  ({note})" if note else ""), va="center",
                      fontsize=8)
        axis.spines[["top", "right"]].set_visible(False)
    lines = [spec.title, spec.machine, spec.precision] + ([spec.load] if spec.load else [])
    lines = [part for line in lines for part in textwrap.wrap(line, 130, subsequent_indent="    ")]
    figure.suptitle("\n".join(lines), x=0.01, ha="left", fontsize=8.5)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.1 * len(lines) / figure.get_figheight()))
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "docs/make_charts.py"})
    plt.close(figure)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report missing or stale charts (exit 1 if any)")
    args = parser.parse_args(argv)
    outputs = {chart_path(report): render(chart(report)) for report in reports()}
    orphans = sorted(str(p.relative_to(ROOT)) for p in CHARTS.glob("*.svg") if p not in outputs)
    if orphans:
        print(f"charts without a report: {', '.join(orphans)} (delete them or restore their JSON)", file=sys.stderr)
        return 1
    return update(outputs, check=args.check, command="python docs/make_charts.py")

if __name__ == "__main__":
    sys.exit(main())
