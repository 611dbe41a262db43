"""The sssegmentation reference implementation, used as a test and benchmark oracle only.

Its pip package ships no config files, so the config dicts of the published ResNeSt-101 checkpoints
(``ssseg/configs/resnest/*.py`` upstream) are rebuilt here from our catalogue entry.
"""
from __future__ import annotations

import copy

REFERENCE_TYPES = {"fcn": "FCN", "pspnet": "PSPNet", "deeplabv3": "Deeplabv3", "deeplabv3plus": "Deeplabv3Plus"}


def reference_config(entry) -> dict:
    """The SEGMENTOR_CFG the published checkpoint was trained with (norm layers as plain BatchNorm2d)."""
    head = copy.deepcopy(entry.head)
    head.pop("num_convs", None)
    return {
        "type": REFERENCE_TYPES[entry.segmentor],
        "num_classes": entry.num_classes,
        "benchmark": False,
        "align_corners": False,
        "norm_cfg": {"type": "BatchNorm2d"},
        "act_cfg": {"type": "ReLU", "inplace": True},
        "backbone": {
            "type": "ResNeSt", "depth": 101, "structure_type": "resnest101", "pretrained": False,
            "outstride": 8, "selected_indices": (0, 1, 2, 3),
        },
        "head": head,
        "auxiliary": {"in_channels": 1024, "out_channels": 512, "dropout": 0.1},
        "losses": {
            "loss_aux": {"type": "CrossEntropyLoss", "scale_factor": 0.4, "ignore_index": -100, "reduction": "mean"},
            "loss_cls": {"type": "CrossEntropyLoss", "scale_factor": 1.0, "ignore_index": -100, "reduction": "mean"},
        },
        "inference": {
            "forward": {"mode": "whole", "cropsize": None, "stride": None},
            "tta": {"multiscale": [1], "flip": False, "use_probs_before_resize": False},
            "evaluate": {"metric_list": ["iou", "miou"]},
        },
    }


def build_reference(entry):
    """The reference segmentor for ``entry`` in eval mode.

    sssegmentation comes with the ``test`` extra; a missing oracle fails the test instead of skipping it,
    so the parity checks can never pass by not running.
    """
    from ssseg.modules.models.segmentors import BuildSegmentor

    model = BuildSegmentor(segmentor_cfg=reference_config(entry), mode="TEST")
    return model.eval()


def reference_logits(model, images):
    """Logits at the input size, as the reference test pipeline computes them."""
    import torch.nn.functional as F
    from ssseg.modules.utils import SSSegInputStructure

    logits = model(SSSegInputStructure(images=images, mode="TEST")).seg_logits
    return F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)
