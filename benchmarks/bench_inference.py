"""Inference speed of the segmentors, against the sssegmentation reference forward in the same process.

    .venv/bin/python benchmarks/bench_inference.py --quick --output bench_inference.json

``--quick`` times DeepLabV3+ (Cityscapes, 19 classes) at 512x512, batch 1, on the CPU: the reference
(sssegmentation, float32) interleaved with our model as ``load()`` returns it (``plain``), with BatchNorm
folded (``optimize_for_inference``), in NCHW and channels_last, in float32 and under bfloat16 autocast, and
the same folded network run by ONNX Runtime (float32) and OpenVINO (float32, and bfloat16 where the CPU has
it): ``backend="onnxruntime"`` / ``"openvino"`` (``resnest_zoo.deploy.runtime``, exported in memory from
the same weights). Without ``--quick`` every head in ``--heads`` runs at every size in ``--sizes`` (default
512x512 and 1024x2048, the Cityscapes frame: slow on a CPU).

Method. Weights are seeded random with non-trivial BatchNorm statistics (speed does not depend on the values;
the reference and the runtimes get the same weights). Every variant uses the same threads (``--threads``, default
torch's: ONNX Runtime's intra-op threads and OpenVINO's ``INFERENCE_NUM_THREADS`` are set to it) and the same
input: the test photograph (``--image``, default ``tests/data/chelsea_160x106.png``) resized to the case's size
and normalised with the model's mean/std. Each variant runs ``--warmup`` times, then ``--repeats`` rounds time every
variant once per round, round-robin (so load changes on a shared machine hit all variants alike), and the
median is reported (a variant whose warm-up and timed runs exceed ``--variant-budget`` seconds is not timed in
later rounds: bfloat16 on a CPU without bf16 units takes ~50 s a forward); ``vs_ref`` is reference median /
variant median (>1: faster than the reference). Forwards
run under ``torch.inference_mode()``; reduced precision is ``torch.autocast`` over the float32 model. On CUDA,
timings use CUDA events after synchronisation, with ``cudnn.benchmark`` on.

Reported per variant: median seconds, throughput in images/s, FLOPs per forward (``FlopCounterMode`` on a
meta-device copy: convolutions and matmuls; an int8 forward does the same operations), achieved GFLOP/s and its
share of the precision's idle peak (``machine.idle_peaks``, below), peak memory (CPU: the process's peak RSS while the
variant's warm-up ran, reset through ``/proc/self/clear_refs`` where allowed, else the process high-water mark,
and ``+MiB``, its rise over the RSS before it, i.e. activations and workspaces, since all the variants' models
stay resident; CUDA: max allocated and its rise over the allocation before),
and for reduced precision the share of pixels whose argmax label equals the float32 PyTorch model's on the
photograph (``label_agreement``; random weights give smaller logit margins than trained ones, so this is a
pessimistic figure). ``max_abs_diff_vs_ref`` checks that the float32 variants (runtimes included) compute what
the reference computes. Per case and precision, ``fastest`` names the fastest variant with its share of the
peak and its speed-up over the reference (the issue's targets: 90% of the peak, 99.5% label agreement). The
machine record has the CPU flags that decide these figures (AVX2, AVX-512, AVX512-BF16, AMX), the runtime
versions, and the load average before and after (the machine may be shared).

INT8 (``--dtypes ...,int8``): the same folded network quantized by NNCF (post-training, calibrated on the case's
input photograph and its mirror image, :mod:`resnest_zoo.deploy.int8`'s graph) and run by OpenVINO.

Peaks (issue 21, item 6). Before the rounds, on the machine as it is (the load average is recorded), each
precision's peak is the best over several square sizes (``--peak-sizes``, non-powers of two included: 1024, 1536,
2048, 2304, 3072), with the size that gave it: ``torch.matmul`` for float32 and bfloat16, and for int8 the better
of ``torch._int_mm`` and an OpenVINO int8 ``MatMul`` (an NNCF-quantized one-layer model). Shares of peak
(``percent_of_peak``) are against these idle peaks. The in-round matmul probe is kept only as a load indicator
(``load_indicator``: in-round probe speed / idle peak; well below 1 means the rounds ran on a busy machine).

Dispatched instruction sets, recorded per case (``isa``): for PyTorch, the oneDNN primitives a forward
executed, from oneDNN's verbose log (``implementation``, e.g. ``brg_conv_fwd:avx512_core_bf16``; ``amx`` in it
means AMX); for OpenVINO, the execution graph's primitive type and runtime precision per layer type (e.g.
``brgconv_avx512_core_vnni`` / ``i8``). ``--profile`` also writes OpenVINO's per-layer counters (``PERF_COUNT``)
summed per layer type and execution type, for each OpenVINO variant.

Checkpoint loading time is measured separately by ``benchmarks/bench_loading.py``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
for folder in (REPO_ROOT, REPO_ROOT / "benchmarks"):  # the package, and benchmarks/memory.py
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from memory import peak_rss_mb, reset_peak_rss, rss_mb  # noqa: E402  (benchmarks/memory.py)
from pipeline import speed_flags  # noqa: E402  (benchmarks/pipeline.py: the flags recorded with a figure)

from resnest_zoo.catalogue import get_entry  # noqa: E402
from resnest_zoo.devices import native_half_precision, native_int8  # noqa: E402
from resnest_zoo.errors import OptionalDependencyError  # noqa: E402
from resnest_zoo.deploy.runtime import RuntimeModel  # noqa: E402
from resnest_zoo.inference.preprocess import normalize, parse_image, resize_like_cv2  # noqa: E402
from resnest_zoo.models.optimize import optimize_for_inference  # noqa: E402
from resnest_zoo.models.segmentor import build_segmentor  # noqa: E402

HEADS = ("fcn", "pspnet", "deeplabv3", "deeplabv3plus")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.int8}
BACKENDS = ("torch", "onnxruntime", "openvino")
PHOTO = REPO_ROOT / "tests" / "data" / "chelsea_160x106.png"
PEAK_SIZES = "1024,1536,2048,2304,3072"
ONEDNN_ISA: list[str] = []
"""The instruction set oneDNN reports it dispatches to (its verbose log's ``isa:`` line), once seen."""


# --------------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in ("onnx", "onnxruntime", "openvino"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_runner(device: str, dtype_name: str, n: int) -> tuple[Callable[[], Any], str]:
    """A square ``n x n`` matmul of ``dtype_name`` ready to time, and how it is computed."""
    if dtype_name == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
        return (lambda: torch._int_mm(a, b)), "torch._int_mm"
    a = torch.randn(n, n, device=device).to(DTYPES[dtype_name])
    b = torch.randn(n, n, device=device).to(DTYPES[dtype_name])
    return (lambda: torch.matmul(a, b)), "torch.matmul"


def openvino_int8_matmul(n: int) -> Callable[[], Any]:
    """An ``n x n`` MatMul quantized to int8 by NNCF and compiled by OpenVINO (float32 elsewhere), ready to time."""
    import nncf
    import numpy as np
    import openvino as ov

    from resnest_zoo.deploy.openvino import openvino_core

    rng = np.random.default_rng(0)
    x = ov.opset13.parameter([n, n], ov.Type.f32, name="x")
    product = ov.opset13.matmul(x, ov.opset13.constant(rng.standard_normal((n, n)).astype(np.float32)), False, False)
    data = rng.standard_normal((n, n)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(ov.Model([product], [x]), nncf.Dataset([data]), subset_size=1)
    compiled = openvino_core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                 "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()
    return lambda: request.infer({0: data})


def measure_peaks(device: str, dtype_name: str, sizes: list[int], budget_s: float = 1.5) -> dict[str, Any]:
    """The best FLOP/s (int8: OP/s) of square matmuls of ``dtype_name`` over ``sizes``: at each size the best of
    at least 3 runs, more until ``budget_s`` seconds are spent (at most 20), so that a quiet moment of a shared
    machine is caught: ``{"gflops", "size", "how", "by_size"}``."""
    runners: list[tuple[int, Callable[[], Any], str]] = []
    for n in sizes:
        run, how = matmul_runner(device, dtype_name, n)
        runners.append((n, run, how))
        if dtype_name == "int8" and device == "cpu":
            try:
                runners.append((n, openvino_int8_matmul(n), "openvino int8 MatMul (NNCF)"))
            except ImportError:
                pass
    best: dict[str, Any] = {"gflops": 0.0, "size": None, "how": None, "by_size": {}}
    for n, run, how in runners:
        run()
        synchronize(device)
        runs: list[float] = []
        while len(runs) < 3 or (sum(runs) < budget_s and len(runs) < 20):
            start = time.perf_counter()
            run()
            synchronize(device)
            runs.append(time.perf_counter() - start)
        gflops = 2 * n**3 / min(runs) / 1e9
        best["by_size"][f"{how} {n}"] = gflops
        if gflops > best["gflops"]:
            best.update(gflops=gflops, size=n, how=how)
    return best


def peak_probe(device: str, dtype_name: str, peak: float, seconds: float = 0.4) -> Variant:
    """A square matmul of ``dtype_name`` sized to take about ``seconds`` at ``peak`` FLOP/s, timed in the rounds
    like a variant: a load indicator (``info["probe_flop"]`` per call), compared with the idle peak."""
    n = int(min(8192, max(256, round((seconds * peak / 2) ** (1 / 3) / 256) * 256)))
    run, how = matmul_runner(device, dtype_name, n)
    probe = Variant(f"matmul probe {dtype_name} ({n})", run, dtype=dtype_name)
    probe.info.update(probe=True, probe_flop=2 * n**3, probe_how=how)
    return probe


# ------------------------------------------------------------------------------------ dispatched instructions
def onednn_primitives(run: Callable[[], Any]) -> dict[str, Any]:
    """The oneDNN primitives one call of ``run`` executes (kind and implementation, e.g. ``convolution
    brg_conv_fwd:avx512_core_bf16``: the ISA is in the implementation's name), counted, from oneDNN's verbose log
    (written to file descriptor 1, captured here)."""
    import collections
    import tempfile

    with tempfile.TemporaryFile(mode="w+") as log:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), torch.inference_mode():
                run()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().splitlines()
    isa = [line.split("isa:", 1)[1] for line in lines if "isa:" in line]
    ONEDNN_ISA.extend(isa[:1])  # oneDNN prints it once per process, with the first primitive
    executed = collections.Counter()
    for line in lines:
        fields = line.split(",")
        if "exec" in fields and "cpu" in fields:
            at = fields.index("cpu")
            executed[f"{fields[at + 1]} {fields[at + 2]}"] += 1
    return {"isa": isa[0] if isa else None, "primitives": dict(executed.most_common())}


def openvino_layers(compiled: Any) -> dict[str, int]:
    """The execution graph of a compiled OpenVINO model: ``"layer type / primitive type / runtime precision"``
    counted (e.g. ``"Convolution / brgconv_avx512_core_vnni / i8"``)."""
    import collections

    counted = collections.Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if layer in ("Input", "Output", "Parameter", "Result", "Const", "Constant"):
            continue
        primitive = info["primitiveType"].astype(str) if "primitiveType" in info else "?"
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        counted[f"{layer} / {primitive} / {precision}"] += 1
    return dict(counted.most_common())


def openvino_profile(compiled: Any, images: Any, runs: int = 2) -> dict[str, dict[str, float]]:
    """OpenVINO's per-layer counters (a model compiled with ``PERF_COUNT``) over ``runs`` inferences, summed per
    ``"layer type / execution type"``: milliseconds per inference and layer count, slowest first."""
    request = compiled.create_infer_request()
    request.infer({0: images})
    totals: dict[str, dict[str, float]] = {}
    for _ in range(runs):
        request.infer({0: images})
        for layer in request.get_profiling_info():
            if layer.status.name != "EXECUTED":
                continue
            row = totals.setdefault(f"{layer.node_type} / {layer.exec_type}", {"ms": 0.0, "layers": 0})
            row["ms"] += layer.real_time.total_seconds() * 1000 / runs
            row["layers"] += 1 / runs
    return dict(sorted(totals.items(), key=lambda item: -item[1]["ms"]))


# --------------------------------------------------------------------------------------------------- inputs
def natural_looking_image(height: int, width: int, *, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A smooth synthetic "photo" (sky gradient, ground, blobs and edges), normalised like the models' inputs.

    Random noise is a poor input for label agreement: every pixel is an outlier. This has large uniform
    regions and sharp boundaries, as real street or indoor scenes do.
    """
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(-1, 1).expand(height, width)
    xs = torch.linspace(0, 1, width).view(1, -1).expand(height, width)
    images = []
    for _ in range(batch):
        sky = torch.stack([0.45 + 0.3 * ys, 0.6 + 0.2 * ys, 0.9 - 0.1 * ys])
        ground = torch.stack([0.35 + 0.1 * xs, 0.33 + 0.05 * ys, 0.3 + 0.0 * xs])
        horizon = 0.45 + 0.1 * torch.rand((), generator=g)
        image = torch.where(ys < horizon, sky, ground)
        for _ in range(8):  # buildings / objects: rectangles of random colour
            y0, x0 = torch.rand(2, generator=g).tolist()
            h, w = (0.1 + 0.35 * torch.rand(2, generator=g)).tolist()
            mask = (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)
            image = torch.where(mask, torch.rand(3, 1, 1, generator=g), image)
        low = torch.randn(1, 3, max(2, height // 32), max(2, width // 32), generator=g)
        texture = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)[0]
        image = (image + 0.05 * texture + 0.01 * torch.randn(3, height, width, generator=g)).clamp(0, 1)
        images.append(image)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (torch.stack(images) - mean) / std


def photo_image(path: Path, height: int, width: int, segmentor: str, dataset: str, *, batch: int = 1) -> torch.Tensor:
    """The photograph at ``path`` resized to ``height x width`` (OpenCV-exact bilinear, aspect not kept) and
    normalised with the model's mean/std: a real picture for label agreement at any benchmark size."""
    pre = get_entry(segmentor, dataset).preprocessing
    pixels = resize_like_cv2(parse_image(path).pixels, (height, width))
    return normalize(pixels, pre.mean, pre.std)[None].expand(batch, -1, -1, -1).contiguous()


def count_flops(segmentor: str, dataset: str, batch: int, height: int, width: int) -> int:
    """FLOPs of one forward (convolutions, matmuls), counted on a meta-device copy: no memory, no compute."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_segmentor(get_entry(segmentor, dataset))
        images = torch.empty(batch, 3, height, width)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(images)
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------------- variants
class Variant:
    def __init__(self, name: str, run: Callable[[], torch.Tensor], *, dtype: str = "float32",
                 channels_last: bool = False, folded: bool = False, compiled: bool = False, reference: bool = False,
                 backend: str = "torch"):
        self.name, self.run = name, run
        self.info = {"variant": name, "dtype": dtype, "channels_last": channels_last, "batchnorm_folded": folded,
                     "compiled": compiled, "reference": reference, "backend": backend}
        self.times: list[float] = []
        self.peak_mb: float | None = None
        self.rise_mb: float | None = None
        self.output: torch.Tensor | None = None
        self.compiled: Callable[[], Any] | None = None  # OpenVINO: the compiled model (after the first run)
        self.model: Any = None  # OpenVINO: the openvino.Model compiled


def build_variants(args: argparse.Namespace, segmentor: str, images: torch.Tensor) -> list[Variant]:
    device = args.device
    entry = get_entry(segmentor, args.dataset)
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import random_segmentor  # seeded weights, non-trivial BatchNorm statistics

    base = random_segmentor(entry.segmentor, entry.dataset, seed=0).to(device)  # with the auxiliary head
    variants: list[Variant] = []
    if args.reference:
        from reference import build_reference, reference_logits

        reference = build_reference(entry)
        reference.load_state_dict(base.state_dict(), strict=True)  # the same weights, the published layout
        reference = reference.to(device).eval()
        variants.append(Variant("reference", lambda: reference_logits(reference, images), reference=True))
    if args.plain:
        variants.append(Variant("plain", lambda: base(images)))
    layouts = {"off": [False], "on": [True], "both": [False, True]}[args.channels_last]
    folded_models: dict[bool, torch.nn.Module] = {}
    for channels_last in layouts:
        model = optimize_for_inference(copy.deepcopy(base), channels_last=channels_last)
        if args.compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # constant weights: folds, prepacks and fuses conv + pointwise ops
            model = torch.compile(model)
        folded_models[channels_last] = model
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        if dtype == torch.int8:
            print("  int8: OpenVINO only (PyTorch has no int8 path for these networks)", flush=True)
            continue
        for channels_last in layouts:
            if dtype != torch.float32 and device == "cpu" and not channels_last and not native_half_precision(device, dtype):
                # oneDNN has no NCHW kernel for this dtype here: PyTorch falls back to a reference convolution
                # some 100x slower than float32 (measured: minutes per layer at 1024x2048). Not worth timing.
                print(f"  skipping {dtype_name} NCHW: no native {dtype_name} convolution on this CPU", flush=True)
                continue
            model = folded_models[channels_last]
            x = images.contiguous(memory_format=torch.channels_last) if channels_last else images

            def run(model=model, x=x, dtype=dtype) -> torch.Tensor:
                if dtype == torch.float32:
                    return model(x)
                with torch.autocast(device, dtype=dtype):
                    return model(x)

            name = f"folded {dtype_name}{' channels_last' if channels_last else ''}{' compiled' if args.compile else ''}"
            variants.append(Variant(name, run, dtype=dtype_name, channels_last=channels_last, folded=True,
                                    compiled=args.compile))
    variants += runtime_variants(args, base, images)
    return variants


def runtime_variants(args: argparse.Namespace, base: torch.nn.Module, images: torch.Tensor) -> list[Variant]:
    """The folded network in each runtime of ``--backends`` (exported in memory from ``base``'s weights), in each
    of ``--dtypes`` the runtime computes natively here; CPU only."""
    variants: list[Variant] = []
    for backend in [b for b in args.backends if b != "torch"]:
        if args.device != "cpu":
            print(f"  skipping {backend}: the runtime backends run on the CPU", flush=True)
            continue
        start = time.perf_counter()
        try:
            runtime = RuntimeModel.from_segmentor(base, backend, threads=torch.get_num_threads())
        except OptionalDependencyError as exc:
            print(f"  skipping {backend}: {exc}", flush=True)
            continue
        print(f"  {backend}: exported and loaded in {time.perf_counter() - start:.1f} s", flush=True)
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            if dtype == torch.int8:
                if backend == "openvino":
                    variants.append(openvino_int8_variant(runtime, images))
                continue
            if dtype not in runtime.backend.dtypes():
                print(f"  skipping {backend} {dtype_name}: {backend} does not compute in {dtype_name} here", flush=True)
                continue

            def run(runtime=runtime, dtype=dtype) -> torch.Tensor:
                if dtype == torch.float32:
                    return runtime(images)
                with torch.autocast("cpu", dtype=dtype):  # how predict(dtype=...) asks a runtime for a precision
                    return runtime(images)

            variant = Variant(f"{backend} {dtype_name}", run, dtype=dtype_name, folded=True, backend=backend)
            if backend == "openvino":
                variant.compiled = lambda runtime=runtime, dtype=dtype: runtime.backend.compiled(dtype)[0]
                variant.model = runtime.backend.model
            variants.append(variant)
    return variants


def openvino_int8_variant(runtime: RuntimeModel, images: torch.Tensor) -> Variant:
    """``runtime``'s OpenVINO network quantized to int8 by NNCF, calibrated on the case's input and its mirror image
    (NNCF's defaults otherwise: what :func:`resnest_zoo.export_openvino_int8` does with an unlabelled source), run
    by the openvino backend as a file of ``export --int8`` would be."""
    import nncf

    from resnest_zoo.deploy.runtime import OpenVINOBackend

    start = time.perf_counter()
    calibration = [images.numpy(), images.flip(-1).contiguous().numpy()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(runtime.backend.model, nncf.Dataset(calibration), subset_size=len(calibration),
                                  target_device=nncf.TargetDevice.CPU)
    backend = OpenVINOBackend(quantized, threads=runtime.backend.threads)
    int8_runtime = RuntimeModel(backend, runtime.config)
    print(f"  openvino int8: quantized by NNCF {nncf.__version__} in {time.perf_counter() - start:.1f} s", flush=True)
    variant = Variant("openvino int8", lambda: int8_runtime(images), dtype="int8", folded=True, backend="openvino")
    variant.compiled, variant.model = (lambda: backend.compiled(torch.float32)[0]), quantized
    return variant


def time_once(variant: Variant, device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        out = variant.run()
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        start_s = time.perf_counter()
        out = variant.run()
        seconds = time.perf_counter() - start_s
    variant.output = out
    return seconds


def dispatched(args: argparse.Namespace, variant: Variant, images: torch.Tensor) -> dict[str, Any]:
    """What a variant's forward ran on: oneDNN primitives (PyTorch) or the OpenVINO execution graph, and with
    ``--profile`` OpenVINO's per-layer counters."""
    if variant.compiled is None:
        return onednn_primitives(variant.run) if args.device == "cpu" and not variant.info["reference"] else {}
    compiled = variant.compiled()
    found: dict[str, Any] = {"layers": openvino_layers(compiled)}
    if args.profile:
        from resnest_zoo.deploy.openvino import openvino_core

        hint = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "int8": "f32"}[variant.info["dtype"]]
        profiled = openvino_core().compile_model(variant.model, "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERF_COUNT": True,
            "PERFORMANCE_HINT": "LATENCY"})
        found["perf_count_ms"] = openvino_profile(profiled, images.numpy())
    return found


def run_case(args: argparse.Namespace, segmentor: str, height: int, width: int, peaks: dict[str, float]) -> dict[str, Any]:
    device = args.device
    print(f"\n== {segmentor}/{args.dataset} {args.batch}x3x{height}x{width} on {device} ==", flush=True)
    if args.image == "synthetic":
        images = natural_looking_image(height, width, batch=args.batch).to(device)
    else:
        images = photo_image(Path(args.image), height, width, segmentor, args.dataset, batch=args.batch).to(device)
    flops = count_flops(segmentor, args.dataset, args.batch, height, width)
    variants = build_variants(args, segmentor, images)
    variants += [peak_probe(device, dtype_name, peaks[dtype_name]) for dtype_name in args.dtypes]
    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        for variant in variants:  # warm-up (and compilation), and each variant's own peak memory
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                before_mb = torch.cuda.memory_allocated() / 2**20
            else:
                before_mb = rss_mb()
            reset = reset_peak_rss() if device == "cpu" else False
            start = time.perf_counter()
            for _ in range(args.warmup):
                time_once(variant, device)
            warm_s = time.perf_counter() - start
            variant.peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb())
            variant.rise_mb = variant.peak_mb - before_mb if (device == "cuda" or reset) else None
            variant.warm_s = warm_s
            variant.info["peak_memory_kind"] = ("cuda_max_allocated" if device == "cuda" else
                                               "rss_peak_during_variant" if reset else "rss_peak_of_process")
            print(f"  warm-up {variant.name:<34} {warm_s / max(1, args.warmup):8.3f} s", flush=True)
            if not variant.info.get("probe") and args.isa:
                variant.info["isa"] = dispatched(args, variant, images)
        for round_index in range(args.repeats):  # interleaved rounds
            for variant in variants:
                # a variant that has had its time budget (e.g. bf16 emulated on a CPU without bf16 units,
                # ~50 s a forward) is timed once only
                if variant.times and variant.warm_s * args.warmup + sum(variant.times) > args.variant_budget:
                    continue
                variant.times.append(time_once(variant, device))
            print(f"  round {round_index + 1}/{args.repeats}: "
                  + ", ".join(f"{v.name} {v.times[-1]:.3f}" if len(v.times) > round_index else f"{v.name} (budget spent)"
                              for v in variants), flush=True)

    probes = [v for v in variants if v.info.get("probe")]
    variants = [v for v in variants if not v.info.get("probe")]
    case_peaks = {p.info["dtype"]: statistics.median(p.info["probe_flop"] / t for t in p.times) for p in probes}
    reference_out = next((v.output for v in variants if v.info["reference"]), None)
    float32_out = next((v.output for v in variants if v.info["dtype"] == "float32" and not v.info["reference"]
                        and v.info["backend"] == "torch"), None)
    ref_median = next((statistics.median(v.times) for v in variants if v.info["reference"]), None)
    for variant in variants:
        median = statistics.median(variant.times)
        dtype = variant.info["dtype"]
        row = dict(variant.info)
        row.update({
            "median_s": median, "times_s": variant.times, "images_per_s": args.batch / median,
            "gflop": flops / 1e9, "achieved_gflops": flops / median / 1e9,
            "percent_of_peak": 100 * flops / median / peaks[dtype] if peaks.get(dtype) else None,
            "peak_memory_mb": variant.peak_mb, "memory_rise_mb": variant.rise_mb,
            "vs_ref": ref_median / median if ref_median else None,
        })
        out = variant.output.float()
        if reference_out is not None and dtype == "float32":
            row["max_abs_diff_vs_ref"] = float((out - reference_out.float()).abs().max())
        if float32_out is not None and dtype != "float32":
            labels, expected = out.argmax(1), float32_out.float().argmax(1)
            row["label_agreement"] = float((labels == expected).float().mean())
            row["max_abs_diff_vs_float32"] = float((out - float32_out.float()).abs().max())
        results.append(row)
    return {"segmentor": segmentor, "dataset": args.dataset, "batch": args.batch, "height": height, "width": width,
            "gflop_per_forward": flops / 1e9, "peak_gflops_interleaved": {d: p / 1e9 for d, p in case_peaks.items()},
            "load_indicator": {d: p / peaks[d] for d, p in case_peaks.items() if peaks.get(d)},
            "peak_probe_times_s": {p.info["dtype"]: p.times for p in probes}, "variants": results}


def fastest(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per precision, the fastest non-reference variant: name, share of the peak, speed-up over the reference."""
    best: dict[str, dict[str, Any]] = {}
    for row in case["variants"]:
        if row["reference"]:
            continue
        current = best.get(row["dtype"])
        if current is None or row["median_s"] < current["median_s"]:
            best[row["dtype"]] = {"variant": row["variant"], "median_s": row["median_s"],
                                  "percent_of_peak": row["percent_of_peak"], "vs_ref": row["vs_ref"],
                                  "label_agreement": row.get("label_agreement")}
    return best


def print_table(cases: list[dict[str, Any]]) -> None:
    header = (f"{'case':<30}{'variant':<36}{'median s':>9}{'img/s':>7}{'vs ref':>8}{'GFLOP/s':>9}{'%peak':>7}"
              f"{'peak MiB':>10}{'+MiB':>7}{'labels=':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for case in cases:
        name = f"{case['segmentor']} {case['batch']}x{case['height']}x{case['width']}"
        print(f"{name:<30}matmul peak in the rounds (GFLOP/s): "
              + ", ".join(f"{d} {p:.0f}" for d, p in case["peak_gflops_interleaved"].items()))
        name = ""
        for row in case["variants"]:
            vs_ref = f"{row['vs_ref']:.2f}x" if row["vs_ref"] else "-"
            peak = f"{row['percent_of_peak']:.0f}" if row["percent_of_peak"] is not None else "-"
            agree = f"{100 * row['label_agreement']:.2f}%" if "label_agreement" in row else "-"
            rise = f"{row['memory_rise_mb']:.0f}" if row["memory_rise_mb"] is not None else "-"
            print(f"{name:<30}{row['variant']:<36}{row['median_s']:>9.3f}{row['images_per_s']:>7.2f}{vs_ref:>8}"
                  f"{row['achieved_gflops']:>9.1f}{peak:>7}{row['peak_memory_mb']:>10.0f}{rise:>7}{agree:>9}")
            name = ""
        for dtype, best in case["fastest"].items():
            vs_ref = f", {best['vs_ref']:.2f}x the reference" if best["vs_ref"] else ""
            print(f"{'':<30}fastest {dtype}: {best['variant']}, {best['percent_of_peak']:.0f}% of the {dtype} "
                  f"matmul peak{vs_ref}")


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width or height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="DeepLabV3+ 512x512 batch 1: reference, plain, folded float32 (NCHW and channels_last) "
                             "and bfloat16 autocast, ONNX Runtime and OpenVINO (float32, bfloat16); 3 rounds")
    parser.add_argument("--heads", default=",".join(HEADS), help="comma-separated (default: all four)")
    parser.add_argument("--dataset", default="cityscapes", help="class count of the classifier (default: cityscapes)")
    parser.add_argument("--sizes", default="512x512,1024x2048", help="HxW list (default: 512x512,1024x2048)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help="float32,bfloat16,float16 (autocast for these two),int8 (OpenVINO, quantized by NNCF)")
    parser.add_argument("--channels-last", choices=("on", "off", "both"), default="both")
    parser.add_argument("--compile", action="store_true", help="torch.compile the folded models (slow to compile)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="torch,onnxruntime,openvino (default all; a runtime that is not installed is skipped, "
                             "with a message)")
    parser.add_argument("--image", default=str(PHOTO),
                        help="picture every variant segments (resized to each size), or 'synthetic' for a generated "
                             "one (default: the test photograph)")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the sssegmentation reference (needs the test extra installed)")
    parser.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True,
                        help="also time our model unoptimised (as load() returns it)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variant-budget", type=float, default=120.0,
                        help="seconds; a variant past it (warm-up included) is not timed in further rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--peak-sizes", default=PEAK_SIZES,
                        help=f"square matmul sizes whose best is each precision's peak (default {PEAK_SIZES})")
    parser.add_argument("--isa", action=argparse.BooleanOptionalAction, default=True,
                        help="record the dispatched instruction set of each variant (oneDNN verbose log, OpenVINO "
                             "execution graph)")
    parser.add_argument("--profile", action="store_true",
                        help="also write OpenVINO's per-layer counters (PERF_COUNT) per layer type for each OpenVINO "
                             "variant")
    parser.add_argument("--output", default="bench_inference.json", help="JSON results file")
    args = parser.parse_args(argv)
    if args.quick:
        args.heads, args.sizes, args.batch, args.dtypes = "deeplabv3plus", "512x512", 1, "float32,bfloat16"
        args.repeats = min(args.repeats, 3)
    args.heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = ([h for h in args.heads if h not in HEADS] + [d for d in args.dtypes if d not in DTYPES]
               + [b for b in args.backends if b not in BACKENDS])
    if unknown:
        parser.error(f"unknown head, dtype or backend: {unknown}")
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device visible")
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")

    load_before = os.getloadavg()
    peak_sizes = [int(n) for n in args.peak_sizes.split(",") if n.strip()]
    idle_peaks = {}
    for dtype_name in args.dtypes:
        idle_peaks[dtype_name] = measure_peaks(args.device, dtype_name, peak_sizes)
        print(f"  idle peak {dtype_name}: {idle_peaks[dtype_name]['gflops']:.0f} GFLOP/s ({idle_peaks[dtype_name]['how']}, "
              f"{idle_peaks[dtype_name]['size']})", flush=True)
    peaks = {d: p["gflops"] * 1e9 for d, p in idle_peaks.items()}
    machine = {
        "device": args.device,
        "cpu_model": cpu_model(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": speed_flags(), "runtimes": runtime_versions(), "load_average_before": load_before,
        "load_average_after_peaks": os.getloadavg(),
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "native": {d: native_int8() if d == "int8" else native_half_precision(args.device, DTYPES[d])
                   for d in args.dtypes},
        "peak_gflops_matmul": {d: p / 1e9 for d, p in peaks.items()},
        "idle_peaks": idle_peaks,
    }
    print(f"{machine['cpu_model']} ({machine['cpus']} CPUs, {machine['torch_threads']} threads, "
          f"{machine['cpu_capability']}; {' '.join(machine['cpu_flags'])})"
          f"{' / ' + machine['gpu'] if machine['gpu'] else ''}; torch {torch.__version__}; "
          + ", ".join(f"{k} {v}" for k, v in machine["runtimes"].items() if v)
          + f"; load average {' '.join(f'{x:.2f}' for x in machine['load_average_before'])}")
    print("idle matmul peak GFLOP/s: " + ", ".join(
        f"{d} {p / 1e9:.1f} at {idle_peaks[d]['size']}" + ("" if machine["native"][d] else " (not native)")
        for d, p in peaks.items()))
    cases = [run_case(args, head, h, w, peaks) for head in args.heads for (h, w) in sizes]
    machine["onednn_isa"] = ONEDNN_ISA[0] if ONEDNN_ISA else None
    machine["load_average_after"] = os.getloadavg()
    for case in cases:
        case["fastest"] = fastest(case)
    print_table(cases)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in machine['load_average_after'])}")
    report = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "machine": machine, "repeats": args.repeats, "warmup": args.warmup, "cases": cases,
              "see_also": "benchmarks/bench_loading.py for checkpoint loading times"}
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.output} (checkpoint load times: benchmarks/bench_loading.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
