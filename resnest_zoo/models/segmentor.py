"""Segmentor assembly: the ResNeSt-101-D8 backbone plus one of four heads.

Every segmentor maps a normalised float ``(N, 3, H, W)`` tensor to class logits ``(N, classes, H, W)``:
the head predicts at 1/8 (1/4 for DeepLabV3+) of the input size and one bilinear upsampling
(align_corners=False) brings the logits back to the input size, as the reference implementation does.

Attribute names (``backbone_net``, ``decoder``, ``ppm_net``, ``aspp_net``, ``shortcut``, ``auxiliary_decoder``)
are those of the published checkpoints, so ``state_dict()`` keys are the file format.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ResNeSt, backbone_from_config, resnest101_d8, split_radix_convs
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
from ..deploy.runtime import with_backend
from ..inference.engine import predict
from ..inference.prediction import Prediction
from ..inference.stream import predict_stream
from .optimize import fold_batchnorms

__all__ = ["Segmentor", "FCN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "build_segmentor", "SEGMENTOR_CLASSES",
           "TrainingOutput", "FREEZE_OPTIONS", "freeze_parts"]

FREEZE_OPTIONS = ("backbone", "batchnorm")
"""What :meth:`Segmentor.freeze` can freeze: the backbone's weights and statistics, or every BatchNorm's statistics."""


def freeze_parts(freeze: str | Sequence[str] | None) -> tuple[str, ...]:
    """``freeze=`` as a tuple of :data:`FREEZE_OPTIONS` (``None`` -> nothing); ``ValueError`` for anything else."""
    parts = () if freeze is None else (freeze,) if isinstance(freeze, str) else tuple(freeze)
    unknown = [part for part in parts if part not in FREEZE_OPTIONS]
    if unknown:
        raise ValueError(f"cannot freeze {', '.join(map(repr, unknown))}: expected None, one of {FREEZE_OPTIONS} "
                         "or a list of them")
    return tuple(dict.fromkeys(parts))


class TrainingOutput(NamedTuple):
    """What a segmentor returns in training mode (``model.train()``): the logits a loss needs, at the input size.

    ``auxiliary_logits`` is ``None`` when the model was built without its auxiliary head. In eval mode the model
    returns the ``logits`` tensor alone. :func:`resnest_zoo.training.segmentation_loss` takes this as it is.
    """

    logits: torch.Tensor
    auxiliary_logits: Optional[torch.Tensor]


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
    made by calling a constructor directly. ``source_sha256`` is the digest of the published file the weights came
    from (when known; ``save_pretrained`` records it) and ``frozen`` what :meth:`freeze` froze.
    """

    config: ModelConfig | None
    entry: CheckpointEntry | None

    def __init__(self, backbone: ResNeSt, num_classes: int, *, auxiliary_head: AuxiliaryHead = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone_net = backbone
        self.config = None
        self.entry = None
        self.source_sha256: str | None = None  # digest of the published file the weights came from, when known
        self.frozen: tuple[str, ...] = ()
        auxiliary = _auxiliary_kwargs(auxiliary_head)
        if auxiliary is not None:
            self.auxiliary_decoder = AuxiliaryFCNHead(num_classes, **auxiliary)

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class logits at the head's resolution from the four backbone stage outputs."""
        raise NotImplementedError

    def head_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits before the final upsampling (1/8 or 1/4 of the input size)."""
        return self.decode(self.backbone_net(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor | TrainingOutput:
        """Logits ``(N, num_classes, H, W)`` for normalised images ``(N, 3, H, W)``.

        In training mode, a :class:`TrainingOutput`: these logits and the auxiliary head's (when built), both at
        the input size, computed from one backbone pass as the reference's training forward does.
        """
        features = self.backbone_net(images)
        logits = F.interpolate(self.decode(features), size=images.shape[2:], mode="bilinear", align_corners=False)
        if not self.training:
            return logits
        auxiliary = None
        if hasattr(self, "auxiliary_decoder"):
            auxiliary = F.interpolate(self.auxiliary_decoder(features[2]), size=images.shape[2:], mode="bilinear",
                                      align_corners=False)
        return TrainingOutput(logits, auxiliary)

    def auxiliary_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's logits at the input size (only when built with ``auxiliary_head=True``)."""
        if not hasattr(self, "auxiliary_decoder"):
            raise RuntimeError("this model was built without the auxiliary head; pass auxiliary_head=True to build()")
        features = self.backbone_net(images)
        logits = self.auxiliary_decoder(features[2])
        return F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)

    def predict(self, images: Any, *, backend: str | None = None, **options: Any) -> Prediction | list[Prediction]:
        """Segment images with the checkpoint's own test-time pipeline; labels come back at the original size.

        ``images`` is one image (file path, PIL image, numpy array, tensor) or a list of them; the options
        (``device``, ``dtype``, ``mode``, ``scales``, ``flip`` ...) are those of
        :func:`resnest_zoo.inference.engine.predict`, which runs it.

        ``backend``: who runs the network, ``"torch"`` (this module; also ``None``), ``"onnxruntime"`` or
        ``"openvino"`` (on the CPU: this model exported in memory the first time and kept until its weights
        change, see :mod:`resnest_zoo.deploy.runtime`); the pipeline around it is the same.
        """
        network = self if backend is None else with_backend(self, backend)
        return predict(network, images, **options)

    def predict_stream(self, images: Any, **options: Any) -> Iterator[Prediction]:
        """Segment many image files as a stream: one :class:`~resnest_zoo.Prediction` per file, in input order,
        with files read ahead by ``DataLoader`` workers and equal shapes batched (memory stays bounded).

        ``images`` is a file, folder or glob pattern, or an iterable of them; the options (``batch_size``,
        ``workers``, ``device``, ``dtype`` ...) are those of :func:`resnest_zoo.inference.stream.predict_stream`,
        which runs it.
        """
        return predict_stream(self, images, **options)

    def fold_batchnorms(self) -> int:
        """Fold every BatchNorm into the convolution before it, in place (eval mode only); how many were folded.
        See :func:`resnest_zoo.optimize_for_inference`, which calls this; the export of a network asks for it."""
        return fold_batchnorms(self)

    def split_radix_convs(self) -> int:
        """Write every split-attention convolution as one dense convolution per radix split, in place (the same
        logits); how many. For exports only (:class:`~resnest_zoo.models.backbone.RadixSplitAttention`): the export
        of a network asks for it on its copy, so that the exported graph holds no grouped convolutions."""
        return split_radix_convs(self)

    def auxiliary_head_shapes(self) -> dict[str, torch.Size]:
        """State-dict shapes of the auxiliary head this model's checkpoints carry (whether built or not)."""
        auxiliary = {} if self.config is None else self.config.auxiliary_head.kwargs()
        with torch.device("meta"):
            head = AuxiliaryFCNHead(self.num_classes, **auxiliary)
        return {f"auxiliary_decoder.{key}": value.shape for key, value in head.state_dict().items()}

    def classifier_keys(self) -> list[str]:
        """State-dict keys of the final 1x1 classifiers, the head's and the auxiliary head's (built or not): the only
        tensors whose shape depends on the class count, so the ones a model with new classes re-initialises."""
        auxiliary_index = max(int(key.split(".")[1]) for key in self.auxiliary_head_shapes())
        return [f"{module}.{name}" for module in (f"decoder.{len(self.decoder) - 1}", f"auxiliary_decoder.{auxiliary_index}")
                for name in ("weight", "bias")]

    def reset_classifiers(self) -> None:
        """Give the classifiers of :meth:`classifier_keys` that this model has fresh random weights (PyTorch's
        default initialisation), allocating them first where they are still on the meta device."""
        device = next((p.device for p in self.parameters() if not p.is_meta), torch.device("cpu"))
        for prefix in dict.fromkeys(key.rsplit(".", 1)[0] for key in self.classifier_keys()):
            if prefix.startswith("auxiliary_decoder.") and not hasattr(self, "auxiliary_decoder"):
                continue
            conv = self.get_submodule(prefix)
            if conv.weight.is_meta:
                conv.to_empty(device=device, recurse=False)
            conv.reset_parameters()

    def freeze(self, *parts: str) -> Segmentor:
        """Freeze ``parts`` for training (and unfreeze the others); returns the model.

        ``"backbone"``: its weights get no gradients and its BatchNorm statistics stay as loaded.
        ``"batchnorm"``: every BatchNorm keeps its running statistics (it normalises with them and never updates
        them, even in ``model.train()``), which suits small batches; their scale and shift still train.
        ``model.freeze()`` unfreezes everything.
        """
        self.frozen = freeze_parts(parts)
        for parameter in self.backbone_net.parameters():
            parameter.requires_grad_("backbone" not in self.frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Segmentor:
        """As :meth:`torch.nn.Module.train`, keeping what :meth:`freeze` froze in eval mode."""
        super().train(mode)
        if mode and "backbone" in self.frozen:
            self.backbone_net.eval()
        if mode and "batchnorm" in self.frozen:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def save_pretrained(self, save_directory: str | os.PathLike[str], **options: Any) -> Path:
        """Save as a Hugging Face style folder (``model.safetensors``, ``config.json``, ``README.md``) that
        :func:`resnest_zoo.from_pretrained` loads; see :func:`resnest_zoo.hub.save.save_pretrained`."""
        from ..hub.save import save_pretrained  # imports huggingface_hub: only when saving

        return save_pretrained(self, save_directory, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Save and upload to a Hugging Face Hub repository; see :func:`resnest_zoo.hub.save.push_to_hub`."""
        from ..hub.save import push_to_hub  # imports huggingface_hub: only when sharing

        return push_to_hub(self, repo_id, **options)

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
