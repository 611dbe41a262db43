"""Inference-only rewrites of a segmentor: BatchNorm folding and memory layout.

>>> model = resnest_zoo.load("deeplabv3plus", "cityscapes", device="cpu")   # doctest: +SKIP
>>> optimize_for_inference(model)                                           # doctest: +SKIP

:func:`optimize_for_inference` changes the model **in place** and returns it:

* ``fold_batchnorm=True`` (default): every eval-mode ``BatchNorm2d`` that directly follows a convolution is
  folded into it (``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``);
  the convolution gains a bias and the BatchNorm is replaced by ``nn.Identity``, so the module tree and the
  forward code stay the same and the logits are equal up to float rounding. This covers the backbone
  (stem, bottlenecks, shortcuts and the split-attention's ``bn0`` and its ``fc1 -> bn1`` bottleneck) and all
  heads (including the auxiliary one).
* ``channels_last=True``: parameters and buffers in ``torch.channels_last`` layout. oneDNN (CPU) and cuDNN
  (tensor cores) run NHWC convolutions without the per-layer layout conversions; feed inputs with
  ``images.to(memory_format=torch.channels_last)`` to get the benefit from the first layer on (the first
  convolution converts otherwise). Numerically the same model.

.. warning::
   A folded model's ``state_dict()`` is **not** the published file format: the BatchNorm keys
   (``*.bn1.running_mean`` ...) are gone and convolutions have new ``*.bias`` entries. Do not save it as a
   checkpoint, and load checkpoints into an unfolded model *before* folding (which is what ``load()`` then
   ``optimize_for_inference()`` does). The model carries ``batchnorm_folded = True``; loading a state dict
   into it raises :class:`~resnest_zoo.errors.CheckpointMismatchError` saying so.

Folding is for inference only: a model (or any BatchNorm in it) in training mode is refused with a
``RuntimeError``, because training updates the statistics that folding bakes in. Folding is idempotent:
a second call finds no BatchNorm left and changes nothing.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .backbone import ResNeStBottleneck, SplitAttentionConv2d
from ..errors import CheckpointMismatchError
from .heads import DepthwiseSeparableConv2d

__all__ = ["optimize_for_inference", "fold_batchnorms", "fold_conv_bn"]

# Modules whose forward applies ``bn`` right after ``conv`` (by attribute name); nn.Sequential is handled
# generically (a Conv2d child immediately followed by a BatchNorm2d child).
_CONV_BN_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    ResNeStBottleneck: (("conv1", "bn1"), ("conv3", "bn3")),
    SplitAttentionConv2d: (("conv", "bn0"), ("fc1", "bn1")),
    DepthwiseSeparableConv2d: (("depthwise_conv", "depthwise_bn"), ("pointwise_conv", "pointwise_bn")),
}


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold the eval-mode ``bn`` into ``conv`` in place (``conv`` gets a bias); the caller removes ``bn``.

    The arithmetic runs in float64 and is rounded once to the parameters' dtype.
    """
    if bn.training:
        raise RuntimeError("cannot fold a BatchNorm in training mode: call model.eval() first")
    if bn.running_mean is None or bn.running_var is None:
        raise RuntimeError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    if conv.out_channels != bn.num_features:
        raise RuntimeError(f"conv has {conv.out_channels} output channels but the BatchNorm {bn.num_features}")
    dtype = conv.weight.dtype
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    conv.weight.copy_(weight.to(dtype))  # keeps the Parameter object (and its layout)
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(dtype=dtype, device=conv.weight.device), requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(bias.to(dtype))


def _conv_bn_pairs(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Conv2d, nn.modules.batchnorm._BatchNorm]]:
    """(parent, bn attribute name, conv, bn) for every BatchNorm applied right after a convolution."""
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (_, first), (name, second) in zip(children, children[1:]):
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    yield parent, name, first, second
        for cls, pairs in _CONV_BN_PAIRS.items():
            if isinstance(parent, cls):
                for conv_name, bn_name in pairs:
                    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
                    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                        yield parent, bn_name, conv, bn


def folded_model_error(source: str = "a checkpoint") -> CheckpointMismatchError:
    """The error for loading weights into a model whose BatchNorms were folded."""
    return CheckpointMismatchError(
        f"cannot load {source} into this model: its BatchNorms were folded into its convolutions by "
        "optimize_for_inference(), so its parameters no longer follow the published checkpoint format. Load the "
        "weights into a freshly built model (resnest_zoo.load / resnest_zoo.build), then optimize that."
    )


def _refuse_state_dict_load(module, state_dict, prefix, *args, **kwargs) -> None:
    raise folded_model_error()


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that follows a convolution into it; returns how many were folded."""
    training = [name or "<model>" for name, m in model.named_modules() if m.training
                and (m is model or isinstance(m, nn.modules.batchnorm._BatchNorm))]
    if training:
        raise RuntimeError(
            "optimize_for_inference() folds BatchNorm statistics into convolutions, which is only valid for "
            f"inference: {', '.join(training[:3])}{' ...' if len(training) > 3 else ''} in training mode. "
            "Call model.eval() first (and do not train a folded model)."
        )
    folded = 0
    for parent, bn_name, conv, bn in list(_conv_bn_pairs(model)):
        fold_conv_bn(conv, bn)
        setattr(parent, bn_name, nn.Identity())
        folded += 1
    if folded and not getattr(model, "batchnorm_folded", False):
        model.register_load_state_dict_pre_hook(_refuse_state_dict_load)
    if folded or getattr(model, "batchnorm_folded", False):
        model.batchnorm_folded = True
    return folded


def optimize_for_inference(model: nn.Module, *, fold_batchnorm: bool = True, channels_last: bool = False) -> nn.Module:
    """Rewrite ``model`` in place for faster inference and return it (the same object).

    Args:
        model: an eval-mode segmentor (or any module built from this package's blocks).
        fold_batchnorm: fold every BatchNorm into the preceding convolution (exact up to float rounding;
            the state dict no longer matches the published format, see the module docstring).
        channels_last: store the weights in NHWC (``torch.channels_last``) layout; pass inputs in the same
            layout. Pays off on GPUs and with bfloat16 on CPUs (oneDNN); measure before using it with float32
            on a CPU (``benchmarks/bench_inference.py``).

    Use it under ``torch.inference_mode()`` (and, for reduced precision, ``torch.autocast``), e.g.::

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(images)
    """
    if fold_batchnorm:
        fold_batchnorms(model)
    elif model.training:
        raise RuntimeError("optimize_for_inference() expects an eval-mode model: call model.eval() first")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
