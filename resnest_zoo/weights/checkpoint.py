"""Reading checkpoint files and loading them strictly into a segmentor.

Accepted layouts (all found in the wild for these models):

* the sssegmentation training file: ``{"model": state_dict, "epoch": ..., "optimizer": ...}``;
* the file cleaned for publishing: ``{"model": state_dict}``;
* ``{"state_dict": state_dict}`` and a bare state dict;
* keys prefixed with ``module.`` (saved from ``DistributedDataParallel``);
* safetensors files holding the state dict.

``.pth`` files are always unpickled with ``torch.load(weights_only=True)``: a file that would import or call
anything is refused (:class:`UnsafeCheckpointError`) before any of its code runs. Zip-format files are
memory-mapped, so the optimizer state of a training file is never read into memory.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointFormatError, CheckpointMismatchError, UnsafeCheckpointError

__all__ = [
    "read_state_dict",
    "extract_state_dict",
    "load_into",
    "describe_state_dict",
    "is_safetensors_file",
    "AUXILIARY_PREFIX",
]

AUXILIARY_PREFIX = "auxiliary_decoder."
_NAMES_BY_CLASS_COUNT = {21: "voc", 150: "ade20k", 19: "cityscapes"}


def is_safetensors_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts like safetensors: an 8-byte little-endian header length, then ``{``."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    header_length = int.from_bytes(head[:8], "little")
    return 0 < header_length <= os.path.getsize(path) - 8


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The model tensors held by a checkpoint file, on the CPU, with any ``module.`` prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if is_safetensors_file(path):
        from safetensors.torch import load_file

        try:
            return extract_state_dict(load_file(str(path), device="cpu"), source=str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointFormatError(f"{path} looks like a safetensors file but could not be read: {exc}") from exc
    return extract_state_dict(_torch_load_safely(path), source=str(path))


def _torch_load_safely(path: Path) -> Any:
    mmap = zipfile.is_zipfile(path)  # the legacy (pre-1.6) format cannot be memory-mapped
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _format_error(path, exc) from exc
        raise UnsafeCheckpointError(
            f"refused to load {path}: unpickling it would import or call code outside plain tensors and "
            f"containers ({_unsupported_global(str(exc))}). Nothing from the file was executed. Checkpoints published for these "
            "models hold tensors only; get the file from the catalogue URL, or convert a trusted file "
            "with `resnest-zoo export`."
        ) from None
    except Exception as exc:  # torch raises many types for damaged files; all mean the same to the user
        raise _format_error(path, exc) from exc


def _format_error(path: Path, exc: BaseException) -> CheckpointFormatError:
    detail = str(exc).splitlines()[0] if str(exc) else "no detail"
    return CheckpointFormatError(
        f"{path} is not a readable PyTorch checkpoint or safetensors file ({type(exc).__name__}: {detail}). "
        "It may be truncated or corrupted: delete it and download it again."
    )


def _unsupported_global(message: str) -> str:
    match = re.search(r"Unsupported (?:global|operand)[^\n]*", message)
    return match.group(0).strip() if match else "unsupported pickle content"


def extract_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the model state dict inside a loaded checkpoint object (see the module docstring for layouts)."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{source} holds a {type(obj).__name__}, expected a dict of tensors or {{'model': ...}}")
    for key in ("model", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        non_tensor = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))[:8]
        raise CheckpointFormatError(
            f"{source} has no state dict: top-level keys are {sorted(map(str, obj))[:8]}; expected a 'model' or "
            f"'state_dict' entry or a flat dict of tensors (non-tensor entries: {non_tensor})"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def describe_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[str | None, int | None]:
    """Guess (segmentor, number of classes) from key names and the classifier's shape."""
    keys = set(state_dict)
    if any(k.startswith("ppm_net.") for k in keys):
        segmentor: str | None = "pspnet"
    elif any(k.startswith("shortcut.") for k in keys):
        segmentor = "deeplabv3plus"
    elif any(k.startswith("aspp_net.") for k in keys):
        segmentor = "deeplabv3"
    elif any(k.startswith("decoder.") for k in keys):
        segmentor = "fcn"
    else:
        segmentor = None
    classifier_keys = [k for k in keys if re.fullmatch(r"decoder\.\d+\.bias", k)]
    num_classes = None
    if classifier_keys:
        last = max(classifier_keys, key=lambda k: int(k.split(".")[1]))
        num_classes = int(state_dict[last].shape[0])
    return segmentor, num_classes


def _format_keys(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    if len(keys) <= limit:
        return shown
    groups: dict[str, int] = {}
    for key in keys:
        groups[key.split(".")[0]] = groups.get(key.split(".")[0], 0) + 1
    by_module = ", ".join(f"{name}.* ({count})" for name, count in groups.items())
    return f"{shown}, ... ({len(keys) - limit} more; by module: {by_module})"


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint",
              assign: bool = False) -> None:
    """Copy ``state_dict`` into ``model`` strictly (``assign=True``: use its tensors as the model's, which is
    how a model built on the meta device gets its weights without allocating them twice).

    Every model tensor must be present with the same shape, and every checkpoint tensor must be a model
    tensor, except the auxiliary training head, which is checked against its expected shapes and then
    dropped when the model was built without it. Anything else raises :class:`CheckpointMismatchError`
    listing the missing, unexpected and mis-shaped keys, and naming the catalogue entry the file looks
    like when it belongs to another segmentor or dataset.
    """
    if getattr(model, "batchnorm_folded", False):
        from ..models.optimize import folded_model_error

        raise folded_model_error(source)
    expected = model.state_dict()
    provided = dict(state_dict)
    mis_shaped: list[str] = []
    if not any(k.startswith(AUXILIARY_PREFIX) for k in expected) and hasattr(model, "auxiliary_head_shapes"):
        auxiliary_shapes = model.auxiliary_head_shapes()
        for key in [k for k in provided if k.startswith(AUXILIARY_PREFIX)]:
            if key in auxiliary_shapes:
                if provided[key].shape != auxiliary_shapes[key]:
                    mis_shaped.append(f"{key}: file {tuple(provided[key].shape)}, model {tuple(auxiliary_shapes[key])}")
                del provided[key]
    missing = sorted(k for k in expected if k not in provided)
    unexpected = sorted(k for k in provided if k not in expected)
    mis_shaped += [
        f"{k}: file {tuple(provided[k].shape)}, model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(provided)) if provided[k].shape != expected[k].shape
    ]
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatchError(_mismatch_message(model, state_dict, source, missing, unexpected, mis_shaped))
    if assign:  # the file's tensors become the model's: give them the model's float32 dtype first
        provided = {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in provided.items()}
    model.load_state_dict(provided, strict=True, assign=assign)


def _mismatch_message(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                      missing: list[str], unexpected: list[str], mis_shaped: list[str]) -> str:
    entry = getattr(model, "entry", None)
    wanted = f"{entry.segmentor}/{entry.dataset} ({entry.num_classes} classes)" if entry else type(model).__name__
    lines = [f"{source} does not fit the {wanted} model:"]
    if missing:
        lines.append(f"  missing from the file ({len(missing)}): {_format_keys(missing)}")
    if unexpected:
        lines.append(f"  not in the model ({len(unexpected)}): {_format_keys(unexpected)}")
    if mis_shaped:
        lines.append(f"  different shapes ({len(mis_shaped)}): {_format_keys(mis_shaped, 5)}")
    segmentor, num_classes = describe_state_dict(state_dict)
    dataset = _NAMES_BY_CLASS_COUNT.get(num_classes or -1)
    if segmentor and dataset and entry is not None and (segmentor, dataset) != (entry.segmentor, entry.dataset):
        lines.append(
            f"The file looks like the {segmentor}/{dataset} checkpoint ({num_classes} classes), not "
            f"{entry.segmentor}/{entry.dataset} ({entry.num_classes} classes): "
            f"load it with resnest_zoo.load({segmentor!r}, {dataset!r}, weights=...)."
        )
    elif segmentor or num_classes:
        lines.append(f"The file looks like a {segmentor or 'unknown'} segmentor with {num_classes or 'unknown'} classes.")
    return "\n".join(lines)
