"""ONNX export of a network: the logits-at-input-size graph, with what a deployment needs in its metadata.

>>> model = resnest_zoo.load("deeplabv3plus", "cityscapes", device="cpu")      # doctest: +SKIP
>>> resnest_zoo.export_onnx(model, "deeplabv3plus_cityscapes.onnx")            # doctest: +SKIP

The graph is exactly ``model(images)``: normalised RGB ``images`` float32 ``(N, 3, H, W)`` in, ``logits``
float32 ``(N, K, H, W)`` at the input size out (names in :mod:`resnest_zoo.formats.runtime`), with batch, height
and width dynamic by default. Class names, palette, mean/std, the test-time resize rule and the source
checkpoint's digest are in the file's ``metadata_props``, so it can be used without this package.

What is exported is any ``nn.Module`` with a ``config`` (:class:`~resnest_zoo.config.ModelConfig`) whose forward
maps normalised images to logits; folding BatchNorm asks the network to do it (``fold_batchnorms()``, which every
:class:`~resnest_zoo.Segmentor` has), so this module knows no network of its own.

How: PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``). The torch.export-based one was
measured too (torch 2.14, onnxscript 0.7): ten times slower to export, and its PSPNet graph traced at one size
failed at another, where this one is verified at two sizes for all four heads (``tests/test_onnx.py``). What
needs care, on a copy of the model (the caller's model is not changed):

* BatchNorm is folded into the convolutions first (``fold_batchnorm=True``): fewer nodes, the same logits.
* PSPNet's adaptive average pooling to 2x2, 3x3 and 6x6 has no ONNX operator for a dynamic input size; it is
  written as two averaging matrices built from the input size (``P_h @ x @ P_w^T``), the same bins as
  ``adaptive_avg_pool2d``. Pooling to 1x1 stays ``GlobalAveragePool``.
* The split-attention convolution, grouped by radix split in the network, is exported as a ``Split`` and one
  dense convolution per split (the network's ``split_radix_convs()``, on the copy), its attention weights split
  rather than indexed: no ``GroupConvolution`` or ``Gather`` in the graph, which OpenVINO's INT8 quantization
  would leave in floating point (:mod:`resnest_zoo.deploy.int8`).
* The final resize takes its size from the input's shape, so it follows
  the dynamic axes (``Shape``-fed ``Resize``), checked by running the file at two sizes.
"""
from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import OutputWriteError, UnsupportedOpsetError
from ..files import atomic_write, check_output
from ..options import OPSET, OPSETS
from ..formats.runtime import INPUT_NAME, OUTPUT_NAME, model_metadata
from .optional import require

__all__ = [
    "export_onnx", "onnx_bytes", "runtime_metadata", "check_opset", "model_config", "export_file",
]

_TRACE_SIZE = (64, 64)
"""The example an export with dynamic axes is traced at (small: tracing runs the network once)."""


class _DynamicAdaptiveAvgPool2d(nn.Module):
    """``adaptive_avg_pool2d(x, (s_h, s_w))`` as ``P_h @ x @ P_w^T`` with averaging matrices built from ``x``'s size,
    so that it exports to ONNX with a dynamic height and width. Bin ``i`` of ``s`` over a length ``L`` covers
    ``[floor(i L / s), ceil((i + 1) L / s))``, as in PyTorch."""

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _averaging_matrix(x.shape[-2], self.output_size[0], x)
        cols = _averaging_matrix(x.shape[-1], self.output_size[1], x)
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def _averaging_matrix(length: int | torch.Tensor, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, length)``: row ``i`` averages bin ``i`` of ``adaptive_avg_pool`` over ``length`` positions."""
    index = torch.arange(bins, device=like.device)
    start = torch.div(index * length, bins, rounding_mode="floor")
    end = torch.div((index + 1) * length + bins - 1, bins, rounding_mode="floor")
    positions = torch.arange(length, device=like.device)
    inside = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def _output_size(module: nn.AdaptiveAvgPool2d) -> tuple[int, int] | None:
    size = module.output_size
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if None in pair or pair == (1, 1):
        return None  # 1x1 exports as GlobalAveragePool
    return int(pair[0]), int(pair[1])


def model_config(model: nn.Module) -> ModelConfig:
    """The model's :class:`~resnest_zoo.config.ModelConfig`; a clear error for a module without one."""
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or not isinstance(config, ModelConfig):
        raise TypeError(
            f"expected a resnest_zoo segmentor with its config (from resnest_zoo.load / build), got "
            f"{type(model).__qualname__}{' without a config' if isinstance(model, nn.Module) else ''}")
    return config


def _prepared_copy(model: nn.Module, fold_batchnorm: bool) -> nn.Module:
    """A float32 CPU eval-mode copy, BatchNorm folded if asked, PSPNet's pooling made dynamic-size friendly."""
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ValueError("the model's weights are on the meta device (not materialised); load weights before exporting")
    was_training = model.training
    try:
        clone = copy.deepcopy(model.eval())  # eval: a training-mode model would export its dropout and BN updates
    finally:
        model.train(was_training)
    # NCHW: with channels_last weights, DeepLabV3+'s dilated depthwise convolutions take a shifted multiply-add
    # path whose taps depend on the feature size, which tracing would fix at the example's size
    clone = clone.to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
    if fold_batchnorm:
        fold = getattr(clone, "fold_batchnorms", None)
        if fold is None:
            raise TypeError(f"fold_batchnorm=True needs a network that folds its own BatchNorms (a resnest_zoo "
                            f"Segmentor's fold_batchnorms()), got {type(model).__qualname__}; pass fold_batchnorm=False")
        fold()
    split = getattr(clone, "split_radix_convs", None)  # a Segmentor writes its grouped convolutions densely
    if split is not None:
        split()
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d) and _output_size(child) is not None:
                setattr(parent, name, _DynamicAdaptiveAvgPool2d(_output_size(child)))
    return clone


def onnx_bytes(model: nn.Module, *, opset: int = OPSET, dynamic: bool = True, fold_batchnorm: bool = True,
               source_sha256: str | None = None, input_size: tuple[int, int] | None = None) -> bytes:
    """The serialised ONNX model of :func:`export_onnx` (same arguments), metadata included, in memory."""
    onnx = require("onnx", "ONNX export")
    metadata = runtime_metadata(model, opset=opset, dynamic=dynamic, fold_batchnorm=fold_batchnorm,
                                source_sha256=source_sha256, input_size=input_size)
    height, width = _input_size(model_config(model), dynamic, input_size)
    network = _prepared_copy(model, fold_batchnorm)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated in favour of the torch.export one (see the module docstring)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            network, (torch.zeros(1, 3, height, width),), buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None, do_constant_folding=True,
        )
    del network
    proto = onnx.load_model_from_string(buffer.getvalue())
    del buffer
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name = "resnest_zoo"
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = int(metadata["num_classes"])  # lost in Resize
    return proto.SerializeToString()


def runtime_metadata(model: nn.Module, *, opset: int = OPSET, dynamic: bool = True,
                     fold_batchnorm: bool = True, source_sha256: str | None = None,
                     input_size: tuple[int, int] | None = None) -> dict[str, str]:
    """The metadata strings an export of ``model`` with these options carries (arguments checked here)."""
    config = model_config(model)
    check_opset(opset)
    if source_sha256 is None:
        source_sha256 = getattr(model, "source_sha256", None)  # recorded by load() when the digest is known
    if source_sha256 is not None:
        from ..weights.integrity import normalise_sha256

        source_sha256 = normalise_sha256(source_sha256, what="source_sha256")
    height, width = _input_size(config, dynamic, input_size)
    input_shape = "batch x 3 x height x width" if dynamic else f"1 x 3 x {height} x {width}"
    return model_metadata(config, source_sha256=source_sha256, input_shape=input_shape,
                          batchnorm_folded=fold_batchnorm or bool(getattr(model, "batchnorm_folded", False)))


def _input_size(config: ModelConfig, dynamic: bool, input_size: tuple[int, int] | None) -> tuple[int, int]:
    if input_size is None:
        input_size = _TRACE_SIZE if dynamic else tuple(config.crop_size)
    height, width = (int(v) for v in input_size)
    if height < 32 or width < 32:
        raise ValueError(f"input_size must be at least 32 x 32 (the network downsamples 8 times and more), "
                         f"got {input_size!r}")
    return height, width


def check_opset(opset: int) -> None:
    """:class:`UnsupportedOpsetError` unless ``opset`` is in :data:`OPSETS`."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise UnsupportedOpsetError(
            f"ONNX opset {opset!r} is not supported: the export is verified for opsets {OPSETS.start} to "
            f"{OPSETS.stop - 1} (default {OPSET}); choose one of them")


def export_file(model: nn.Module, path: str | os.PathLike[str], suffix: str, write: Callable[[Path], None],
                options: dict[str, Any], needs: tuple[str, ...], siblings: tuple[str, ...] = ()) -> Path:
    """The steps every export shares: check the destination (a writable file name ending in ``suffix``), the
    packages in ``needs`` and the ``options`` (:func:`runtime_metadata`'s) before any work; then ``write(staged)``
    writes the file under a temporary name, with the ``siblings`` it makes beside it (OpenVINO's ``.bin``), and
    they are renamed into place, ``path`` last (:func:`resnest_zoo.files.atomic_write`).
    :class:`~resnest_zoo.OutputWriteError` when the folder cannot be created or written."""
    target = Path(path)
    check_output(target, what=f"{suffix} file", hint=f"give a file name such as {target / ('model' + suffix)} "
                                                      "in a folder you can write to")
    if target.suffix.lower() != suffix:
        raise ValueError(f"the file name must end in {suffix}, got {str(target)!r}")
    for module in needs:
        require(module, f"writing a {suffix} file")
    runtime_metadata(model, **options)
    try:
        with atomic_write(target, siblings=siblings) as staged:
            write(staged)
    except OutputWriteError:
        raise
    except OSError as exc:
        raise OutputWriteError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = OPSET,
    dynamic: bool = True,
    fold_batchnorm: bool = True,
    source_sha256: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (``.onnx``) and return the path.

    Args:
        model: a segmentor from :func:`~resnest_zoo.load` / :func:`~resnest_zoo.build` (it is copied, not changed).
        opset: ONNX opset version, one of :data:`resnest_zoo.options.OPSETS` (default :data:`resnest_zoo.options.OPSET`).
        dynamic: batch, height and width dynamic; ``False`` fixes the input to ``1 x 3 x input_size``.
        fold_batchnorm: fold BatchNorm into the convolutions (the same logits, a leaner graph).
        source_sha256: sha256 of the checkpoint file the weights came from, recorded in the metadata; default
            the one :func:`~resnest_zoo.load` recorded (``model.source_sha256``: the pin or ``sha256=``), else
            unknown (``resnest-zoo export`` always records it).
        input_size: ``(height, width)`` of the traced example; the only size accepted when ``dynamic=False``
            (default: the model's training crop then, a small example otherwise).

    Raises :class:`~resnest_zoo.UnsupportedOpsetError`, :class:`~resnest_zoo.OutputWriteError` (a destination
    that cannot be written, checked before the export runs) and :class:`~resnest_zoo.OptionalDependencyError`
    (``onnx`` not installed).
    """
    options = dict(opset=opset, dynamic=dynamic, fold_batchnorm=fold_batchnorm, source_sha256=source_sha256,
                   input_size=input_size)
    return export_file(model, path, ".onnx", lambda staged: staged.write_bytes(onnx_bytes(model, **options)),
                       options, needs=("onnx",))
