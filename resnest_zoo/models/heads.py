"""Decoder building blocks of the four segmentation heads.

Each block is an ``nn.Sequential`` or a small module whose child indices and names reproduce the
published state-dict layout exactly (``decoder.4.running_var``, ``aspp_net.parallel_branches.2.depthwise_bn.weight``
...), so that the checkpoints load with ``strict=True`` and no key renaming.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "conv_bn_relu",
    "DepthwiseSeparableConv2d",
    "PyramidPoolingModule",
    "ASPP",
    "DepthwiseSeparableASPP",
    "fcn_decoder",
    "classifier",
    "AuxiliaryFCNHead",
]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, *, dilation: int = 1) -> list[nn.Module]:
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU, as a list so callers can splice it into a Sequential."""
    padding = dilation * (kernel_size // 2)
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DepthwiseSeparableConv2d(nn.Module):
    """Depthwise 3x3 (optionally dilated) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise_conv = nn.Conv2d(
            in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False
        )
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.depthwise_activate = nn.ReLU(inplace=True)
        self.pointwise_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)
        self.pointwise_activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.depthwise_conv
        if x.device.type == "cpu" and conv.dilation[0] > 1 and _is_channels_last(x):
            # oneDNN's NHWC depthwise convolution with a large dilation (ASPP: 12, 24, 36) is 5-10x slower than
            # its NCHW one on CPUs; nine shifted multiply-adds in NHWC cost about as much as NCHW, with no reorder.
            x = _dilated_depthwise_conv3x3(x, conv.weight, conv.bias, conv.dilation[0])
        else:
            x = conv(x)
        x = self.depthwise_activate(self.depthwise_bn(x))
        return self.pointwise_activate(self.pointwise_bn(self.pointwise_conv(x)))


def _like(reference: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x`` in ``reference``'s channels_last layout when ``reference`` has it (else unchanged).

    ``torch.cat`` returns NCHW unless every input is NHWC, and the pooled branches' outputs (computed at 1x1 to 6x6,
    where the layout is ambiguous, or broadcast) are not: the fusing conv would then convert the whole concatenation
    back to NHWC, a large copy. Converting the small branches costs a fraction of that.
    """
    return x.contiguous(memory_format=torch.channels_last) if _is_channels_last(reference) else x


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _dilated_depthwise_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=dilation, dilation=dilation, groups=C)`` for a 3x3 depthwise kernel,
    as nine per-channel multiply-adds of shifted views (taps that fall entirely in the padding are skipped).

    Keeps ``x``'s memory layout; under autocast it computes in ``x``'s dtype, as the convolution would.
    """
    n, c, h, w = x.shape
    taps = weight.reshape(c, 9).to(x.dtype)
    out = x * taps[:, 4].view(1, c, 1, 1)
    if bias is not None:
        out += bias.to(x.dtype).view(1, c, 1, 1)
    for ky in (-1, 0, 1):
        for kx in (-1, 0, 1):
            dy, dx = ky * dilation, kx * dilation
            if (ky == 0 and kx == 0) or abs(dy) >= h or abs(dx) >= w:
                continue
            target = out[:, :, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            source = x[:, :, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
            target.addcmul_(source, taps[:, (ky + 1) * 3 + kx + 1].view(1, c, 1, 1))
    return out


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPoolingModule(nn.Module):
    """PSPNet's pyramid pooling: the input concatenated with its pooled (1, 2, 3, 6) summaries, fused by a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), *conv_bn_relu(in_channels, out_channels)) for scale in pool_scales
        )
        self.bottleneck = nn.Sequential(
            *conv_bn_relu(in_channels + out_channels * len(pool_scales), out_channels, kernel_size=3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pyramid = [x] + [_like(x, _upsample(branch(x), size)) for branch in self.branches]
        return self.bottleneck(torch.cat(pyramid, dim=1))


class _AtrousPyramid(nn.Module):
    """Parallel atrous branches plus an image-pooling branch, concatenated and fused by a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, branches: list[nn.Module]) -> None:
        super().__init__()
        self.parallel_branches = nn.ModuleList(branches)
        self.global_branch = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_channels, out_channels))
        self.bottleneck = nn.Sequential(
            *conv_bn_relu(out_channels * (len(branches) + 1), out_channels, kernel_size=3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.parallel_branches]
        # The pooled branch is 1x1: bilinear upsampling of a single pixel is a broadcast.
        outputs.append(_like(x, self.global_branch(x).expand(-1, -1, x.shape[2], x.shape[3])))
        return self.bottleneck(torch.cat(outputs, dim=1))


class ASPP(_AtrousPyramid):
    """DeepLabV3's atrous spatial pyramid pooling: 1x1 and dilated 3x3 convs (1, 12, 24, 36) + image pooling."""

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int] = (1, 12, 24, 36)) -> None:
        branches = [
            nn.Sequential(*conv_bn_relu(in_channels, out_channels, 1 if d == 1 else 3, dilation=d)) for d in dilations
        ]
        super().__init__(in_channels, out_channels, branches)


class DepthwiseSeparableASPP(_AtrousPyramid):
    """DeepLabV3+'s ASPP: as :class:`ASPP`, with depthwise-separable dilated branches."""

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int] = (1, 12, 24, 36)) -> None:
        branches: list[nn.Module] = [
            nn.Sequential(*conv_bn_relu(in_channels, out_channels)) if d == 1
            else DepthwiseSeparableConv2d(in_channels, out_channels, dilation=d)
            for d in dilations
        ]
        super().__init__(in_channels, out_channels, branches)


def classifier(in_channels: int, num_classes: int, dropout: float) -> list[nn.Module]:
    """Dropout (a no-op in eval mode) then the 1x1 convolution that produces class logits."""
    return [nn.Dropout2d(dropout), nn.Conv2d(in_channels, num_classes, kernel_size=1)]


def fcn_decoder(in_channels: int, feats_channels: int, num_classes: int, *, num_convs: int, dropout: float) -> nn.Sequential:
    """FCN head: ``num_convs`` 3x3 conv-BN-ReLU layers, then the classifier (keys ``decoder.0`` ... ``decoder.7``)."""
    layers: list[nn.Module] = []
    for index in range(num_convs):
        layers += conv_bn_relu(in_channels if index == 0 else feats_channels, feats_channels, kernel_size=3)
    layers += classifier(feats_channels if num_convs else in_channels, num_classes, dropout)
    return nn.Sequential(*layers)


class AuxiliaryFCNHead(nn.Sequential):
    """The training-time auxiliary head on stage 3 (1024 -> 512 -> classes).

    Present in the published files, unused for inference; built only when asked for (e.g. to fine-tune).
    """

    def __init__(self, num_classes: int, *, in_channels: int = 1024, feats_channels: int = 512, dropout: float = 0.1) -> None:
        super().__init__(*conv_bn_relu(in_channels, feats_channels, kernel_size=3), *classifier(feats_channels, num_classes, dropout))
