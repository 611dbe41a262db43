"""torch.hub entry points for resnest_zoo.

    torch.hub.list("<owner>/resnest_zoo")
    model = torch.hub.load("<owner>/resnest_zoo", "deeplabv3plus_resnest101_cityscapes")
    model = torch.hub.load("<owner>/resnest_zoo", "load", "pspnet", "ade20k", device="cpu")

One entry point per published checkpoint, named ``{segmentor}_resnest101_{dataset}``, plus the generic ``load``
and ``from_pretrained`` for saved models (a folder or a Hub repository, e.g. one fine-tuned to new classes).
"""
from __future__ import annotations

from typing import Any as _Any
from typing import Callable as _Callable

# torch.hub checks that these import before it loads this file
dependencies = ["torch", "numpy", "PIL", "requests", "tqdm", "filelock", "safetensors", "huggingface_hub"]

import resnest_zoo as _zoo  # noqa: E402  (torch.hub puts the repository on sys.path)
from resnest_zoo.catalogue import CheckpointEntry as _Entry  # noqa: E402
from resnest_zoo.catalogue import catalogue as _catalogue  # noqa: E402


def load(segmentor: str, dataset: str, pretrained: bool = True, **kwargs: _Any) -> _zoo.Segmentor:
    """Any catalogue model: ``load("deeplabv3plus", "cityscapes", device="cpu")``.

    ``pretrained=False`` builds the architecture with random weights; other keyword arguments go to
    ``resnest_zoo.load`` (weights, device, sha256, cache_dir, progress, auxiliary_head, num_classes, class_names,
    palette, freeze) or, without
    pretrained weights, to ``resnest_zoo.build`` (auxiliary_head, device).
    """
    if pretrained:
        return _zoo.load(segmentor, dataset, **kwargs)
    return _zoo.build(segmentor, dataset, **kwargs)


def from_pretrained(name_or_path: str, **kwargs: _Any) -> _zoo.Segmentor:
    """A model saved with ``save_pretrained`` -- a local folder or a Hugging Face Hub repository ``org/name`` -- such
    as one fine-tuned to classes of its own: ``from_pretrained("org/road-damage", device="cpu")``.

    Keyword arguments go to ``resnest_zoo.from_pretrained`` (revision, device, auxiliary_head, freeze, ...).
    """
    return _zoo.from_pretrained(name_or_path, **kwargs)


def _size_text(entry: _Entry) -> str:
    return f"{entry.size / 2**20:.0f} MiB" if entry.size else "not pinned yet (about 250-750 MiB)"


def _entry_point(entry: _Entry) -> _Callable[..., _zoo.Segmentor]:
    def entry_point(pretrained: bool = True, **kwargs: _Any) -> _zoo.Segmentor:
        return load(entry.segmentor, entry.dataset, pretrained=pretrained, **kwargs)

    entry_point.__name__ = entry_point.__qualname__ = entry.hub_name
    entry_point.__doc__ = (
        f"{entry.title}.\n\n"
        f"    Classes: {entry.num_classes} ({', '.join(entry.class_names[:6])}, ...)\n"
        f"    Reported mIoU: {entry.miou:.2f}% on {entry.dataset} {entry.eval_set} (trained on {entry.train_set}, "
        f"crop {entry.crop_size[0]}x{entry.crop_size[1]}, {entry.schedule['epochs']} epochs)\n"
        f"    Checkpoint: {entry.filename}, {_size_text(entry)}\n"
        f"    Test-time resize: keep ratio to {entry.preprocessing.resize[0]}x{entry.preprocessing.resize[1]}\n\n"
        "    pretrained=True downloads, verifies and caches the checkpoint; pretrained=False gives random weights.\n"
        "    Keyword arguments go to resnest_zoo.load (weights, device, sha256, cache_dir, progress, auxiliary_head).\n"
    )
    return entry_point


for _entry in _catalogue().values():
    globals()[_entry.hub_name] = _entry_point(_entry)
del _entry
