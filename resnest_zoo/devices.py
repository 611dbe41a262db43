"""Which device to compute on, whether it is there, and what it can do natively.

:func:`resolve_device` is the one place that turns what a user asked for (``"cuda"``, ``"cuda:1"``, a
``torch.device``, nothing) into a device that exists here, or raises :class:`DeviceNotAvailableError` saying what
was found instead; ``load``, ``build``, ``predict`` and the ``resnest-zoo`` command all ask it.
"""
from __future__ import annotations

import os
import sys
import warnings

import torch

from .errors import DeviceNotAvailableError
from .options import PRECISIONS

__all__ = [
    "dtype_of",
    "precision_name",
    "default_device",
    "resolve_device",
    "available_devices",
    "native_half_precision",
    "half_precision",
    "emulated_half_precision",
    "warn_if_emulated",
    "cpu_flags",
    "native_int8",
    "warn_if_int8_not_native",
]

# How much slower than float32 a CPU runs autocast in a dtype it has no units for (measured on this project's
# development CPU, an AMD EPYC with AVX2 only: docs/performance.md; float16: 14 minutes instead of 11 s).
_EMULATED_SLOWDOWN = {torch.bfloat16: "about 7 times", torch.float16: "more than 70 times"}

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_warned: set[tuple[str, torch.dtype | str]] = set()  # (device type, dtype) pairs already warned about in this process


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype of a precision name of :data:`resnest_zoo.options.PRECISIONS` (``"bfloat16"`` ...)."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return getattr(torch, name)


def precision_name(dtype: torch.dtype) -> str:
    """How messages, files and the command line name a precision: ``"bfloat16"`` for ``torch.bfloat16``."""
    return str(dtype).removeprefix("torch.")


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device_count(kind: str) -> int | None:
    """How many ``kind`` devices torch can use here; None for a type torch has no availability query for."""
    module = getattr(torch, kind, None)
    is_available = getattr(module, "is_available", None)
    if is_available is None:
        return None
    if not is_available():
        return 0
    count = getattr(module, "device_count", None)
    return int(count()) if count is not None else 1


def available_devices() -> list[str]:
    """The devices torch can compute on here: ``cpu``, then ``cuda:0``, ``cuda:1`` ... (``mps``, ``xpu`` ...)."""
    found = ["cpu"]
    for kind in ("cuda", "xpu", "mps", "mtia"):
        found += [f"{kind}:{index}" for index in range(_device_count(kind) or 0)]
    return found


def _no_device_reason(kind: str) -> str:
    if kind != "cuda":
        return f"PyTorch {torch.__version__} finds none"
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) was built without CUDA support"
    return (f"PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no GPU (no NVIDIA GPU or "
            f"driver, or CUDA_VISIBLE_DEVICES hides them)")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The ``torch.device`` for ``device``, checked to exist here; ``None`` gives :func:`default_device`.

    Raises :class:`~resnest_zoo.DeviceNotAvailableError` for a name torch does not know (``"gpu"``), an accelerator
    this machine lacks (``"cuda"`` without a GPU), or an index past the devices present (``"cuda:3"`` with two),
    naming the devices that are available.
    """
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceNotAvailableError(
            f"device {device!r} is not a device name torch understands: expected 'cpu', 'cuda', 'cuda:N' "
            f"(N counting from 0) or another torch device type; devices found here: {_found()}") from None
    if resolved.type == "cpu":
        return resolved
    count = _device_count(resolved.type)
    kind = resolved.type.upper()
    if count == 0:
        raise DeviceNotAvailableError(
            f"device {str(device)!r} was asked for, but no {kind} device is available: "
            f"{_no_device_reason(resolved.type)}; devices found here: {_found()}. Use 'cpu', or leave the device "
            f"unset to use a GPU when there is one")
    if count is not None and resolved.index is not None and resolved.index >= count:
        raise DeviceNotAvailableError(
            f"device {str(device)!r} was asked for, but there {'is' if count == 1 else 'are'} only {count} "
            f"{kind} device{'' if count == 1 else 's'} here, numbered from 0; devices found here: {_found()}")
    return resolved


def _found() -> str:
    return ", ".join(available_devices())


def native_half_precision(device: str | torch.device, dtype: torch.dtype) -> bool:
    """Whether ``device`` runs ``dtype`` convolutions natively: float32 always; on CUDA, float16 always and
    bfloat16 where the GPU supports it; on a CPU, only with AVX512-BF16/AMX (bfloat16) or AVX512-FP16 (float16).
    Elsewhere autocast still works but emulates the arithmetic, several times slower than float32."""
    if dtype == torch.float32:
        return True
    kind = torch.device(device).type
    if kind == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a torch build without these oneDNN queries
        return False


def emulated_half_precision(device: str | torch.device, dtype: torch.dtype) -> str | None:
    """None when ``device`` runs ``dtype`` natively; else why it will be slow, how slow, and what to use instead
    (the other half-precision dtype where that one is native, else float32)."""
    if native_half_precision(device, dtype):
        return None
    kind = torch.device(device).type
    name = precision_name(dtype)
    other = torch.float16 if dtype == torch.bfloat16 else torch.bfloat16
    other_name = precision_name(other)
    where = "this CPU" if kind == "cpu" else f"this {kind} device"
    units = " (CPUs need AVX512-BF16/AMX for bfloat16, AVX512-FP16/AMX-FP16 for float16)" if kind == "cpu" else ""
    slowdown = _EMULATED_SLOWDOWN.get(dtype, "several times") if kind == "cpu" else "several times"
    if native_half_precision(device, other):
        advice = f"{where} has native {other_name}: use {other_name} instead"
    else:
        advice = "float32 is the fastest here"
    return (f"{where} has no native {name} arithmetic{units}, so {name} is emulated and runs {slowdown} slower "
            f"than float32; {advice}")


def half_precision(device: str | torch.device) -> torch.dtype:
    """The half precision to compute in on ``device`` (what ``--fp16`` means): float16 on CUDA, bfloat16 on a CPU,
    or the other one where only that is native. A ``ValueError`` says why where neither is native, since emulated
    half precision is many times slower than float32."""
    device = torch.device(device)
    preferred = (torch.float16, torch.bfloat16) if device.type == "cuda" else (torch.bfloat16, torch.float16)
    for dtype in preferred:
        if native_half_precision(device, dtype):
            return dtype
    raise ValueError(emulated_half_precision(device, preferred[0]))


def warn_if_emulated(device: str | torch.device, dtype: torch.dtype) -> None:
    """Warn, once per process for each device type and dtype, that ``dtype`` is emulated on ``device``
    (:func:`emulated_half_precision`); silent where it is native. The warning points at the first caller
    outside resnest_zoo (the user's ``model.predict(...)`` line)."""
    key = (torch.device(device).type, dtype)
    if key in _warned:
        return
    message = emulated_half_precision(device, dtype)
    if message is not None:
        _warned.add(key)
        level, frame = 1, sys._getframe()
        while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
            frame, level = frame.f_back, level + 1
        warnings.warn(message, UserWarning, stacklevel=level)


_INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
"""CPU flags (as ``/proc/cpuinfo`` spells them) of 8-bit integer dot-product instructions."""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in ``/proc/cpuinfo`` (``avx512_vnni``, ``amx_int8`` ...); empty
    where that file is not there (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_int8() -> bool:
    """Whether this CPU has 8-bit integer dot-product instructions (AMX-INT8, AVX512-VNNI or AVX-VNNI), with which
    an INT8 network runs faster than float32; without them INT8 arithmetic is emulated with wider instructions."""
    return any(flag in cpu_flags() for flag in _INT8_FLAGS)


def warn_if_int8_not_native() -> None:
    """Warn, once per process, that INT8 will not be faster on this CPU (:func:`native_int8` is false)."""
    if ("cpu", "int8") in _warned or native_int8():
        return
    _warned.add(("cpu", "int8"))
    found = "no CPU flags could be read (not Linux)" if not cpu_flags() else "its flags list none of them"
    warnings.warn(f"this CPU has no 8-bit dot-product instructions (AMX-INT8, AVX512-VNNI or AVX-VNNI: {found}), so an "
                  f"INT8 model will not run faster here than float32; quantize for the CPU it will be deployed on",
                  UserWarning, stacklevel=2)
