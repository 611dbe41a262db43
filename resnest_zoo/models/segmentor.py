"""Segmentor assembly: the ResNeSt-101-D8 backbone plus one of four heads.

Every segmentor maps a normalised float ``(N, 3, H, W)`` tensor to class logits ``(N, classes, H, W)``:
the head predicts at 1/8 (1/4 for DeepLabV3+) of the input size and one bilinear upsampling
(align_corners=False) brings the logits back to the input size, as the reference implementation does.

Attribute names (``backbone_net``, ``decoder``, ``ppm_net``, ``aspp_net``, ``shortcut``, ``auxiliary_decoder``)
are those of the published checkpoints, so ``state_dict()`` keys are the file format.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ResNeSt, backbone_from_config, resnest101_d8
from .heads import (
    ASPP,
    AuxiliaryFCNHead,
    DepthwiseSeparableASPP,
    DepthwiseSeparableConv2d,
    PyramidPoolingModule,
    classifier,
    conv_bn_relu,
    fcn_decoder,
)

from ..catalogue import CheckpointEntry
from ..config import ModelConfig

if TYPE_CHECKING:
    from ..inference.prediction import Prediction

__all__ = ["Segmentor", "FCN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "build_segmentor", "SEGMENTOR_CLASSES"]


AuxiliaryHead = Union[bool, Mapping[str, Any]]
"""``auxiliary_head=``: False (none), True (the default stage-3 FCN head) or its keyword arguments."""


def _auxiliary_kwargs(auxiliary_head: AuxiliaryHead) -> dict[str, Any] | None:
    if auxiliary_head is False:
        return None
    return {} if auxiliary_head is True else dict(auxiliary_head)


class Segmentor(nn.Module):
    """Base class: backbone, head and (optionally) the auxiliary training head.

    Subclasses build their head modules and implement :meth:`decode`.
    ``config`` is the :class:`~resnest_zoo.config.ModelConfig` the model was built from (classes, palette,
    test-time preprocessing), and ``entry`` the catalogue record it came from; both are ``None`` for a model
    made by calling a constructor directly.
    """

    config: ModelConfig | None
    entry: CheckpointEntry | None

    def __init__(self, backbone: ResNeSt, num_classes: int, *, auxiliary_head: AuxiliaryHead = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone_net = backbone
        self.config = None
        self.entry = None
        auxiliary = _auxiliary_kwargs(auxiliary_head)
        if auxiliary is not None:
            self.auxiliary_decoder = AuxiliaryFCNHead(num_classes, **auxiliary)

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class logits at the head's resolution from the four backbone stage outputs."""
        raise NotImplementedError

    def head_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits before the final upsampling (1/8 or 1/4 of the input size)."""
        return self.decode(self.backbone_net(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)`` for normalised images ``(N, 3, H, W)``."""
        logits = self.head_logits(images)
        return F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)

    def auxiliary_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's logits at the input size (only when built with ``auxiliary_head=True``)."""
        if not hasattr(self, "auxiliary_decoder"):
            raise RuntimeError("this model was built without the auxiliary head; pass auxiliary_head=True to build()")
        features = self.backbone_net(images)
        logits = self.auxiliary_decoder(features[2])
        return F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)

    def predict(self, images: Any, **options: Any) -> Prediction | list[Prediction]:
        """Segment images with the checkpoint's own test-time pipeline; labels come back at the original size.

        ``images`` is one image (file path, PIL image, numpy array, tensor) or a list of them; the options
        (``device``, ``dtype``, ``mode``, ``scales``, ``flip`` ...) are those of
        :func:`resnest_zoo.inference.engine.predict`, which this delegates to. The network itself knows nothing
        of images: the pipeline is imported here, at the first call, so that it never imports this module back.
        """
        from ..inference.engine import predict

        return predict(self, images, **options)

    def auxiliary_head_shapes(self) -> dict[str, torch.Size]:
        """State-dict shapes of the auxiliary head this model's checkpoints carry (whether built or not)."""
        auxiliary = {} if self.config is None else self.config.auxiliary_head.kwargs()
        with torch.device("meta"):
            head = AuxiliaryFCNHead(self.num_classes, **auxiliary)
        return {f"auxiliary_decoder.{key}": value.shape for key, value in head.state_dict().items()}

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return None if self.config is None else self.config.class_names

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}" + ("" if self.entry is None else f", entry={self.entry.name!r}")


class FCN(Segmentor):
    """Fully convolutional head: two 3x3 convs to 512 channels on stage 4, then a 1x1 classifier."""

    def __init__(self, num_classes: int, *, in_channels: int = 2048, feats_channels: int = 512, num_convs: int = 2,
                 dropout: float = 0.1, backbone: ResNeSt | None = None, auxiliary_head: AuxiliaryHead = False) -> None:
        super().__init__(backbone or resnest101_d8(), num_classes, auxiliary_head=auxiliary_head)
        self.decoder = fcn_decoder(in_channels, feats_channels, num_classes, num_convs=num_convs, dropout=dropout)

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.decoder(features[3])


class PSPNet(Segmentor):
    """Pyramid scene parsing: pyramid pooling (1, 2, 3, 6) on stage 4, fused to 512 channels, then classified."""

    def __init__(self, num_classes: int, *, in_channels: int = 2048, feats_channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1,
                 backbone: ResNeSt | None = None, auxiliary_head: AuxiliaryHead = False) -> None:
        super().__init__(backbone or resnest101_d8(), num_classes, auxiliary_head=auxiliary_head)
        self.ppm_net = PyramidPoolingModule(in_channels, feats_channels, pool_scales)
        self.decoder = nn.Sequential(*classifier(feats_channels, num_classes, dropout))

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.ppm_net(features[3]))


class DeepLabV3(Segmentor):
    """DeepLabV3: ASPP (dilations 1, 12, 24, 36 and image pooling) on stage 4 into 512 channels, then classified."""

    def __init__(self, num_classes: int, *, in_channels: int = 2048, feats_channels: int = 512,
                 dilations: Sequence[int] = (1, 12, 24, 36), dropout: float = 0.1,
                 backbone: ResNeSt | None = None, auxiliary_head: AuxiliaryHead = False) -> None:
        super().__init__(backbone or resnest101_d8(), num_classes, auxiliary_head=auxiliary_head)
        self.aspp_net = ASPP(in_channels, feats_channels, dilations)
        self.decoder = nn.Sequential(*classifier(feats_channels, num_classes, dropout))

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.aspp_net(features[3]))


class DeepLabV3Plus(Segmentor):
    """DeepLabV3+: depthwise-separable ASPP on stage 4, upsampled to stage 1 and joined with a 48-channel
    shortcut from it, refined by two depthwise-separable 3x3 convs, then classified (output at 1/4)."""

    def __init__(self, num_classes: int, *, in_channels: Sequence[int] = (256, 2048), feats_channels: int = 512,
                 shortcut_channels: int = 48, dilations: Sequence[int] = (1, 12, 24, 36), dropout: float = 0.1,
                 backbone: ResNeSt | None = None, auxiliary_head: AuxiliaryHead = False) -> None:
        super().__init__(backbone or resnest101_d8(), num_classes, auxiliary_head=auxiliary_head)
        low_channels, high_channels = in_channels
        self.aspp_net = DepthwiseSeparableASPP(high_channels, feats_channels, dilations)
        self.shortcut = nn.Sequential(*conv_bn_relu(low_channels, shortcut_channels))
        self.decoder = nn.Sequential(
            DepthwiseSeparableConv2d(feats_channels + shortcut_channels, feats_channels),
            DepthwiseSeparableConv2d(feats_channels, feats_channels),
            *classifier(feats_channels, num_classes, dropout),
        )

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        low = features[0]
        context = F.interpolate(self.aspp_net(features[3]), size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat([context, self.shortcut(low)], dim=1))


SEGMENTOR_CLASSES: dict[str, type[Segmentor]] = {
    "fcn": FCN, "pspnet": PSPNet, "deeplabv3": DeepLabV3, "deeplabv3plus": DeepLabV3Plus,
}


def build_segmentor(source: ModelConfig | CheckpointEntry, *, auxiliary_head: bool = False) -> Segmentor:
    """Build the (randomly initialised, eval-mode) network a config -- or a catalogue entry's config -- describes:
    backbone from ``config.backbone``, head from ``config.head``, auxiliary head from ``config.auxiliary_head``."""
    entry = source if isinstance(source, CheckpointEntry) else None
    config = source.config if isinstance(source, CheckpointEntry) else source
    model = SEGMENTOR_CLASSES[config.segmentor](
        config.num_classes,
        backbone=backbone_from_config(config.backbone),
        auxiliary_head=config.auxiliary_head.kwargs() if auxiliary_head else False,
        **config.head.kwargs(),
    )
    model.config = config
    model.entry = entry
    return model.eval()
