"""The options a user sets in more than one place (Python, the command line): their accepted values and defaults.

The code reads its defaults here and the command line's ``--help`` prints them from here, so the two cannot
disagree. Torch-free, so that ``resnest-zoo --help`` shows them without importing torch.
"""
from __future__ import annotations

import os

__all__ = [
    "BATCH_SIZE",
    "WRITERS",
    "MAX_WORKERS",
    "default_workers",
    "WORKERS_HELP",
    "ALPHA",
    "MASK_FORMATS",
    "BACKENDS",
    "PRECISIONS",
    "RETRIES",
    "RETRY_DELAY",
    "MAX_RETRY_DELAY",
    "TIMEOUT",
    "GITHUB_API",
    "OPSET",
    "OPSETS",
    "SPLIT",
    "CALIBRATION_SIZE",
    "CALIBRATION_HELP",
    "MAX_MIOU_DROP",
    "HELD_OUT",
    "MIN_CALIBRATION_IMAGES",
    "RESTORE_ITERATIONS",
]

BATCH_SIZE = 4
"""Images (``mode="whole"``) or windows (``mode="slide"``) per forward pass."""

WRITERS = 4
"""Background threads encoding and writing the outputs of batch prediction."""

MAX_WORKERS = 8
"""The most ``DataLoader`` worker processes a process of a run starts by default."""


def default_workers(local_processes: int = 1) -> int:
    """Worker processes per process of a run: half of this node's CPUs shared among its processes (the other half
    computes), at least 1 and at most :data:`MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus // max(1, local_processes) // 2))


WORKERS_HELP = f"half the CPUs, at most {MAX_WORKERS}"
"""How :func:`default_workers` is described in help texts."""

ALPHA = 0.5
"""Opacity of the mask in an overlay."""

MASK_FORMATS = ("png", "cityscapes-ids", "npy")
"""What batch prediction writes per input: an indexed PNG, Cityscapes label ids, or a NumPy array of class ids."""

BACKENDS = ("torch", "onnxruntime", "openvino")
"""Who runs the network: PyTorch itself, or ONNX Runtime / OpenVINO on the CPU."""

PRECISIONS = ("float32", "float16", "bfloat16")
"""Floating-point precisions by the name users type; ``resnest_zoo.devices.dtype`` turns a name into a torch dtype."""

RETRIES = 4
"""Further attempts after a failed transfer."""

RETRY_DELAY = 1.0
"""Backoff factor in seconds: retries wait 0, 2, 4, 8 ... times it."""

MAX_RETRY_DELAY = 30.0
"""The longest wait between two attempts, in seconds."""

TIMEOUT = 30.0
"""Network timeout in seconds: to connect, and between two packets while reading."""

GITHUB_API = "https://api.github.com"
"""The GitHub API asked for the size and digest its publisher lists for a release asset."""

OPSET = 17
"""ONNX opset of an export."""

OPSETS = range(11, 21)
"""Opsets the ONNX export is verified at: 11 (the first whose ``Resize`` has PyTorch's half-pixel bilinear) to 20."""

SPLIT = "val"
"""The dataset split evaluated by default: the one the published figures were measured on."""

CALIBRATION_SIZE = 300
"""Images of the calibration source an INT8 quantization calibrates on (evenly spaced through the source)."""

CALIBRATION_HELP = ("a folder of images, a list file (one image path per line), or a dataset split as "
                    "DATASET:ROOT[:SPLIT] (e.g. voc:/data/VOCdevkit:val; labelled, so the mIoU bound applies)")
"""What an INT8 calibration source can be, in words (help texts and messages)."""

MAX_MIOU_DROP = 1.0
"""The largest mIoU drop, in points (0-100), that an INT8 quantization with labelled calibration data accepts."""

HELD_OUT = 0.1
"""Share of the calibration images held out (not calibrated on) to measure INT8 label agreement with float32."""

MIN_CALIBRATION_IMAGES = 2
"""The fewest images an INT8 quantization calibrates on (plus at least one held out)."""

RESTORE_ITERATIONS = 16
"""The most groups of layers INT8 accuracy control returns to floating point before it gives up on the bound."""
