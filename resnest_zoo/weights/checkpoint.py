"""Reading checkpoint files and loading them strictly into a segmentor.

Accepted layouts (all found in the wild for these models):

* the sssegmentation training file: ``{"model": state_dict, "epoch": ..., "optimizer": ...}``;
* the file cleaned for publishing: ``{"model": state_dict}``;
* ``{"state_dict": state_dict}`` and a bare state dict;
* keys prefixed with ``module.`` (saved from ``DistributedDataParallel``);
* safetensors files holding the state dict.

``.pth`` files are always unpickled with ``torch.load(weights_only=True)``: a file that would import or call
anything is refused (:class:`UnsafeCheckpointError`) before any of its code runs. Zip-format files are
memory-mapped, so the optimizer state of a training file is never read into memory. A file that is none of
these (an HTML error page, random bytes, an empty or truncated file) raises :class:`CheckpointFormatError`
saying what it holds. :func:`check_fits` is the strict-load check, on the meta device, that a file's tensors
fit a catalogue entry: downloads pass it before they are trusted, and ``export`` before it writes.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..catalogue import CheckpointEntry
from ..errors import CheckpointFormatError, CheckpointMismatchError, UnsafeCheckpointError

__all__ = [
    "read_state_dict",
    "extract_state_dict",
    "load_into",
    "describe_state_dict",
    "check_fits",
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


def read_state_dict(path: str | os.PathLike[str], *, source: str | None = None) -> dict[str, torch.Tensor]:
    """The model tensors held by a checkpoint file, on the CPU, with any ``module.`` prefix removed.

    ``source`` names the file in error messages (default: its path).
    """
    path = Path(path)
    name = source or str(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".pth", ".pt", ".bin", ".safetensors"))[:5]
        raise CheckpointFormatError(f"{name} is a folder, not a checkpoint file: pass the file itself"
                                    + (f" (checkpoint files in it: {', '.join(inside)})" if inside else ""))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {name!r} does not exist")
    if is_safetensors_file(path):
        from safetensors.torch import load_file

        try:
            return extract_state_dict(load_file(str(path), device="cpu"), source=name)
        except CheckpointFormatError:
            raise
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointFormatError(f"{name} looks like a safetensors file but could not be read: {exc}") from exc
    return extract_state_dict(_torch_load_safely(path, name), source=name)


def _torch_load_safely(path: Path, name: str) -> Any:
    with open(path, "rb") as handle:
        head = handle.read(64)
    zipped = head.startswith(b"PK\x03\x04")  # the format of torch.save since 1.6
    if not zipped and not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise CheckpointFormatError(f"{name} is not a readable PyTorch checkpoint or safetensors file: "
                                    f"{_describe_bytes(head, path.stat().st_size)}, where a PyTorch file starts as a "
                                    "zip archive ('PK') or a pickle (0x80) and a safetensors file with its header")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global:[^\n]*?(?= was not an allowed global|\n|$)", str(exc))
        if refused is None:  # not a call the safe unpickler refused: damaged or not a torch file
            raise _format_error(name, exc) from None
        raise UnsafeCheckpointError(
            f"refused to load {name}: unpickling it would import or call code outside plain tensors and "
            f"containers ({refused.group(0).strip()}). Nothing from the file was executed. Checkpoints published "
            "for these models hold tensors only; get the file from the catalogue URL, or convert a trusted file "
            "with `resnest-zoo export`."
        ) from None
    except Exception as exc:  # torch raises many types for damaged files; all mean the same to the user
        raise _format_error(name, exc) from exc


def _describe_bytes(head: bytes, size: int) -> str:
    if size == 0:
        return "the file is empty (0 bytes)"
    text = head[:40].decode("utf-8", errors="replace")
    if text.isprintable():
        return f"it holds text ({size} bytes), starting {text!r}"
    return f"its {size} bytes start with {head[:8].hex(' ')}"


def _format_error(name: str, exc: BaseException) -> CheckpointFormatError:
    text = str(exc)
    stopped = re.search(r"Unsupported operand[^\n]*", text)
    if stopped is not None:  # a pickle, but not one torch.save wrote
        return CheckpointFormatError(f"{name} is not a readable PyTorch checkpoint: a pickle, but not one torch.save "
                                     f"wrote, or a damaged one (the safe unpickler stopped at: "
                                     f"{stopped.group(0).strip()}).")
    detail = text.strip().split(". ")[0] if text.strip() else "no detail"
    return CheckpointFormatError(f"{name} is truncated or corrupted: it starts as a PyTorch file, but reading it "
                                 f"failed ({type(exc).__name__}: {detail}).")


def extract_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the model state dict inside a loaded checkpoint object (see the module docstring for layouts)."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{source} holds a {type(obj).__name__}, expected a dict of tensors or {{'model': ...}}")
    where = None
    for key in ("model", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            obj, where = inner, key
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        non_tensor = sorted(f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor))
        counts = f"{len(tensors)} tensors and {len(non_tensor)} other entries: {', '.join(non_tensor[:8])}"
        if where is None:
            found = f"top-level keys are {sorted(map(str, obj))[:8]}" + (f", with {counts}" if obj else "")
        else:
            found = f"its {where!r} entry " + (f"holds {counts}" if obj else "is empty")
        raise CheckpointFormatError(
            f"{source} has no state dict: {found}. Expected a 'model' or 'state_dict' entry holding tensors, or "
            "a flat dict of tensors."
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
              assign: bool = False, reinitialised: Collection[str] = ()) -> None:
    """Copy ``state_dict`` into ``model`` strictly (``assign=True``: use its tensors as the model's, which is
    how a model built on the meta device gets its weights without allocating them twice).

    Every model tensor must be present with the same shape, and every checkpoint tensor must be a model
    tensor, except the auxiliary training head, which is checked against its expected shapes and then
    dropped when the model was built without it. Anything else raises :class:`CheckpointMismatchError`
    listing the missing, unexpected and mis-shaped keys, and naming the catalogue entry the file looks
    like when it belongs to another segmentor or dataset.

    ``reinitialised`` (new classes, issue 14) names the model tensors that keep the model's own values -- a
    classifier freshly initialised for another class count: the file's tensors of those names are not used,
    whatever their shape. Only those names are exempt; everything else is as strict as above.
    """
    if getattr(model, "batchnorm_folded", False):
        from ..models.optimize import folded_model_error

        raise folded_model_error(source)
    expected = model.state_dict()
    provided = dict(state_dict)
    # --- reinitialised tensors: the model's own replace the file's (an auxiliary one may be absent from the model)
    unknown = [k for k in reinitialised if k not in expected and not k.startswith(AUXILIARY_PREFIX)]
    if unknown:
        raise ValueError(f"reinitialised names tensors the model does not have: {', '.join(unknown)}")
    for key in reinitialised:
        provided.pop(key, None)
        if key in expected:
            provided[key] = expected[key]
    # ---
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


def check_fits(entry: CheckpointEntry, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless the tensors fit ``entry``'s model (strict, on the meta
    device, so nothing is allocated); an auxiliary training head is checked when the file has one."""
    from ..models.segmentor import build_segmentor

    with torch.device("meta"):
        model = build_segmentor(entry)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        load_into(model, state_dict, source=source)
