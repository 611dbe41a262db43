"""ResNeSt-101 backbone with output stride 8 (the "S-101-D8" of the published table).

ResNeSt (Zhang et al., 2020) is a ResNet-D whose 3x3 convolution is replaced by a split-attention
convolution. The variant used by the published checkpoints:

* deep stem: three 3x3 convolutions 3 -> 64 -> 64 -> 128, then a 3x3 max-pool (stride 4 in all);
* four stages of bottlenecks (3, 4, 23, 3 blocks; widths 64, 128, 256, 512; expansion 4);
* split attention with radix 2, cardinality 1 and reduction factor 4 (hidden width at least 32);
* when a block strides, the split-attention conv runs at stride 1 and a 3x3 average pool
  (stride 2, padding 1) follows it; shortcuts downsample with a 2x2 average pool before the 1x1 conv;
* output stride 8: stages 3 and 4 do not stride but dilate by 2 and 4, and the first block of each
  dilated stage uses half the dilation ("contracted first dilation").

Attribute names mirror the published state-dict keys (``stem.0``, ``layer3.7.conv2.fc1`` ...): they are
the file format, so they are not renamed here.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import BackboneConfig

__all__ = [
    "ResNeSt", "ResNeStBottleneck", "SplitAttentionConv2d", "RadixSplitAttention", "split_radix_convs", "resnest101_d8",
    "backbone_from_config",
]


class SplitAttentionConv2d(nn.Module):
    """A grouped 3x3 convolution producing ``radix`` candidate feature maps, mixed by channel attention.

    The attention weights come from the global average of the summed splits, through a
    1x1 -> BN -> ReLU -> 1x1 bottleneck and a softmax across the radix dimension.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        dilation: int = 1,
        radix: int = 2,
        groups: int = 1,
        reduction_factor: int = 4,
    ) -> None:
        super().__init__()
        hidden = max(in_channels * radix // reduction_factor, 32)
        self.radix = radix
        self.groups = groups
        self.channels = channels
        self.conv = nn.Conv2d(
            in_channels, channels * radix, kernel_size=3, padding=dilation, dilation=dilation,
            groups=groups * radix, bias=False,
        )
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, groups=groups)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, channels * radix, kernel_size=1, groups=groups)

    def attention(self, splits: torch.Tensor) -> torch.Tensor:
        """Per-split channel weights, shape ``(N, radix, C, 1, 1)``, for splits ``(N, radix, C, H, W)``."""
        return self._attention_from_pooled(splits.sum(dim=1).mean(dim=(2, 3), keepdim=True))

    def _attention_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(N, radix, C, 1, 1)`` from the pooled sum of the splits ``(N, C, 1, 1)``."""
        n = pooled.shape[0]
        hidden = self.relu(self.bn1(self.fc1(pooled)))
        logits = self.fc2(hidden)
        # fc2's output channels are ordered (group, radix, channel-in-group); softmax runs over radix.
        logits = logits.view(n, self.groups, self.radix, -1).transpose(1, 2)
        return logits.softmax(dim=1).reshape(n, self.radix, self.channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Equal to ``(self.attention(splits) * splits).sum(dim=1)``, but memory-bound work is kept to two passes
        # over the conv output: neither the summed splits nor the weighted (N, radix, C, H, W) product are
        # materialised (the mean of a sum is the sum of the means), and the weighted sum accumulates in place.
        x = self.relu(self.bn0(self.conv(x)))
        n, _, h, w = x.shape
        splits = x.view(n, self.radix, self.channels, h, w)
        pooled = x.mean(dim=(2, 3), keepdim=True).view(n, self.radix, self.channels, 1, 1).sum(dim=1)
        # Under autocast the softmax runs in float32: cast the (tiny) weights back so that the weighted sum,
        # the largest tensor here, stays in the conv's dtype instead of being promoted to float32.
        weights = self._attention_from_pooled(pooled).to(x.dtype)
        out = splits[:, 0] * weights[:, 0]
        for index in range(1, self.radix):
            out.addcmul_(splits[:, index], weights[:, index])
        return out


class RadixSplitAttention(nn.Module):
    """:class:`SplitAttentionConv2d` for export: the same function, written as ``radix`` dense convolutions.

    The grouped convolution (one group per radix split) becomes a ``torch.split`` of its input and one dense
    convolution per split, and the attention weights are split, not indexed. Exported, that is ``Split`` and
    ``Convolution`` instead of ``GroupConvolution`` and ``Gather``: OpenVINO's INT8 quantization (NNCF) quantizes
    dense convolutions but leaves grouped ones in floating point, and the gathers cost layout conversions
    (issue 21's per-layer profile). Built by :func:`split_radix_convs` on a copy being exported; the eager model
    keeps :class:`SplitAttentionConv2d`.
    """

    def __init__(self, source: SplitAttentionConv2d) -> None:
        super().__init__()
        if source.groups != 1:
            raise ValueError(f"only cardinality 1 is implemented, got groups={source.groups}")
        self.radix, self.channels = source.radix, source.channels
        self.split_size = source.conv.in_channels // source.radix
        convs, norms = [], []
        for index in range(source.radix):
            part = slice(index * source.channels, (index + 1) * source.channels)
            conv = nn.Conv2d(self.split_size, source.channels, kernel_size=source.conv.kernel_size,
                             padding=source.conv.padding, dilation=source.conv.dilation,
                             bias=source.conv.bias is not None)
            with torch.no_grad():
                conv.weight.copy_(source.conv.weight[part])
                if source.conv.bias is not None:
                    conv.bias.copy_(source.conv.bias[part])
            convs.append(conv)
            norms.append(_channel_slice(source.bn0, part))
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.relu, self.fc1, self.bn1, self.fc2 = source.relu, source.fc1, source.bn1, source.fc2
        self.to(source.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.relu(norm(conv(part))) for part, conv, norm in
                    zip(torch.split(x, self.split_size, dim=1), self.convs, self.norms)]
        pooled = branches[0].mean(dim=(2, 3), keepdim=True)
        for branch in branches[1:]:
            pooled = pooled + branch.mean(dim=(2, 3), keepdim=True)
        logits = self.fc2(self.relu(self.bn1(self.fc1(pooled))))  # channels ordered (radix, channel)
        weights = torch.stack(torch.split(logits, self.channels, dim=1)).softmax(dim=0).unbind(0)
        out = branches[0] * weights[0]
        for branch, weight in zip(branches[1:], weights[1:]):
            out = out + branch * weight
        return out


def _channel_slice(norm: nn.Module, part: slice) -> nn.Module:
    """The channels ``part`` of a BatchNorm (a copy), or the module itself when it is no BatchNorm (folded)."""
    if not isinstance(norm, nn.BatchNorm2d):
        return norm
    sliced = nn.BatchNorm2d(part.stop - part.start, eps=norm.eps).eval()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(sliced, name).copy_(getattr(norm, name)[part])
    return sliced


def split_radix_convs(model: nn.Module) -> int:
    """Replace every :class:`SplitAttentionConv2d` in ``model`` by its :class:`RadixSplitAttention` form, in
    place (the logits stay equal up to float rounding); returns how many. For exports, on a copy."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SplitAttentionConv2d):
                setattr(parent, name, RadixSplitAttention(child))
                replaced += 1
    return replaced


class ResNeStBottleneck(nn.Module):
    """1x1 reduce -> split-attention 3x3 (-> 3x3 average pool when striding) -> 1x1 expand, plus shortcut."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        radix: int = 2,
        groups: int = 1,
        reduction_factor: int = 4,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = SplitAttentionConv2d(
            width, width, dilation=dilation, radix=radix, groups=groups, reduction_factor=reduction_factor
        )
        # ResNeSt strides by average pooling after the split-attention conv, not inside it.
        self.avg_layer = nn.AvgPool2d(3, stride, padding=1) if stride > 1 else None
        self.conv3 = nn.Conv2d(width, width * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.avg_layer is not None:
            out = self.avg_layer(out)
        out = self.bn3(self.conv3(out))
        out += identity  # in place: conv3's (or bn3's) output is a fresh tensor that nothing else holds
        return self.relu(out)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Average-pool (ResNet-D style) then 1x1 conv + BN; keys ``downsample.1`` and ``downsample.2``."""
    pool: nn.Module = (
        nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
    )
    return nn.Sequential(
        pool,
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResNeSt(nn.Module):
    """ResNeSt backbone returning the four stage outputs (strides 4, 8, 8, 8 at output stride 8)."""

    # output stride -> (per-stage strides, per-stage dilations)
    _STRIDES_AND_DILATIONS = {
        8: ((1, 2, 1, 1), (1, 1, 2, 4)),
        16: ((1, 2, 2, 1), (1, 1, 1, 2)),
        32: ((1, 2, 2, 2), (1, 1, 1, 1)),
    }

    def __init__(
        self,
        *,
        blocks_per_stage: tuple[int, int, int, int] = (3, 4, 23, 3),
        output_stride: int = 8,
        stem_channels: int = 128,
        base_width: int = 64,
        radix: int = 2,
        groups: int = 1,
        reduction_factor: int = 4,
        contract_dilation: bool = True,
    ) -> None:
        super().__init__()
        if output_stride not in self._STRIDES_AND_DILATIONS:
            raise ValueError(f"output_stride must be one of 8, 16, 32; got {output_stride}")
        if groups != 1:
            raise ValueError("only cardinality (groups) 1 is implemented: it is what the checkpoints use")
        strides, dilations = self._STRIDES_AND_DILATIONS[output_stride]
        half = stem_channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels: list[int] = []
        in_channels = stem_channels
        for index, (num_blocks, stride, dilation) in enumerate(zip(blocks_per_stage, strides, dilations)):
            width = base_width * 2**index
            first_dilation = dilation // 2 if contract_dilation and dilation > 1 else dilation
            out_channels = width * ResNeStBottleneck.expansion
            block_args = dict(radix=radix, groups=groups, reduction_factor=reduction_factor)
            layers = [
                ResNeStBottleneck(
                    in_channels, width, stride=stride, dilation=first_dilation,
                    downsample=_shortcut(in_channels, out_channels, stride), **block_args,
                )
            ]
            layers += [
                ResNeStBottleneck(out_channels, width, dilation=dilation, **block_args) for _ in range(1, num_blocks)
            ]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layers))
            self.out_channels.append(out_channels)
            in_channels = out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.stem(x))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


def resnest101_d8() -> ResNeSt:
    """The backbone of all twelve published checkpoints."""
    return backbone_from_config(BackboneConfig())


def backbone_from_config(config: BackboneConfig) -> ResNeSt:
    """The backbone a :class:`~resnest_zoo.config.BackboneConfig` (a catalogue entry's ``backbone``) describes."""
    return ResNeSt(
        blocks_per_stage=config.blocks_per_stage, output_stride=config.output_stride,
        stem_channels=config.stem_channels, radix=config.radix, groups=config.groups,
        reduction_factor=config.reduction_factor, contract_dilation=config.contract_dilation,
    )

