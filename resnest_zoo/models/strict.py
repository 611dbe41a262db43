"""Strict loading: whether a checkpoint's tensors fit a model, exactly, and filling the model with them.

The published files are the format: every model tensor must come from the file with the same shape, and every
tensor of the file must be used, except the auxiliary training head (checked against its shapes, then dropped when
the model was built without it). Anything else is one :class:`~resnest_zoo.CheckpointMismatchError` listing what
does not fit and naming the catalogue entry the file looks like. :func:`check_fits` runs the same check on the meta
device (nothing allocated), which is how the weights layer checks a download before trusting it, and
:func:`check_buildable` whether a saved model's ``config.json`` describes a model these classes can build.
"""
from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable, Collection, Mapping

import torch
from torch import nn

from ..catalogue import CheckpointEntry
from ..config import ModelConfig
from ..datasets import DATASETS
from ..errors import CheckpointMismatchError, ConfigFormatError
from .heads import AuxiliaryFCNHead
from .optimize import folded_model_error
from .segmentor import SEGMENTOR_CLASSES, build_segmentor

__all__ = ["AUXILIARY_PREFIX", "load_into", "check_fits", "fits", "check_buildable", "describe_state_dict"]

AUXILIARY_PREFIX = "auxiliary_decoder."
"""State-dict keys of the auxiliary training head start with this."""


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
    dataset = next((key for key, info in DATASETS.items() if info.num_classes == num_classes), None)
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
    device, so nothing is allocated); an auxiliary training head is checked when the file has one. The weights
    layer calls it through :func:`fits` on every file it is about to trust."""
    with torch.device("meta"):
        model = build_segmentor(entry)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        load_into(model, state_dict, source=source)


def fits(entry: CheckpointEntry) -> Callable[[Mapping[str, torch.Tensor], str], None]:
    """:func:`check_fits` for ``entry``, as the ``check`` the weights layer runs on a file before trusting it."""
    return lambda state_dict, source: check_fits(entry, state_dict, source)


def check_buildable(config: ModelConfig) -> None:
    """Raise :class:`~resnest_zoo.ConfigFormatError` unless ``config`` names a segmentor built here, with head and
    auxiliary-head arguments its constructors take (a saved model's ``config.json`` is checked so before building)."""
    if config.segmentor not in SEGMENTOR_CLASSES:
        raise ConfigFormatError(f"model.segmentor is {config.segmentor!r}, expected one of {sorted(SEGMENTOR_CLASSES)}")
    for what, constructor, values in (("head", SEGMENTOR_CLASSES[config.segmentor], config.head),
                                      ("auxiliary_head", AuxiliaryFCNHead, config.auxiliary_head)):
        accepted = set(inspect.signature(constructor).parameters) - {"num_classes", "backbone", "auxiliary_head"}
        unknown = sorted(set(values.kwargs()) - accepted)
        if unknown:
            raise ConfigFormatError(f"model.{what} has argument(s) {unknown} that {constructor.__name__} does not take "
                                    f"(it takes {sorted(accepted)})")
