"""``resnest-zoo eval``: a checkpoint's mIoU on the user's copy of its dataset, on one process or under torchrun."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import CommandError, add_cache_dir, add_quiet
from .exit_codes import ExitCode
from .predict import _half_precision, at_least

__all__ = ["register"]


def _write_json(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so no half-written file remains."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..api import load
    from ..catalogue import get_entry
    from ..datasets import READERS
    from ..devices import resolve_device
    from ..distributed import device_for, ranks_from_environment
    from ..errors import DatasetError, ImageReadError
    from ..evaluation.runner import evaluate

    entry = get_entry(args.segmentor, args.dataset)
    try:
        READERS[entry.dataset].samples(args.data, args.split)  # the data first: before any download or load
    except DatasetError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise CommandError(f"--json {json_path}: folder {str(json_path.parent)!r} does not exist", ExitCode.USAGE)
    ranks = ranks_from_environment()
    device = device_for(resolve_device(args.device) if args.device else None, ranks)
    dtype = _half_precision(device) if args.fp16 else None  # the same rule as predict
    model = load(entry.segmentor, entry.dataset, weights=args.weights, device=device, cache_dir=args.cache_dir,
                 progress=not args.quiet and ranks.is_main, optimize=True)
    try:
        result = evaluate(model, args.data, split=args.split, limit=args.limit, mode=args.mode, scales=args.scales,
                          flip=args.flip, dtype=dtype, device=device, batch_size=args.batch_size,
                          workers=args.workers, progress=not args.quiet)
    except (DatasetError, ImageReadError) as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    if ranks.is_main:
        print(result)
        sys.stdout.flush()
        if json_path is not None:
            _write_json(json_path, result.to_json())
    return ExitCode.OK


def register(add) -> None:
    """Add the ``eval`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("eval", "Evaluate a checkpoint on a copy of its dataset: per-class IoU, mIoU against the published figure "
                    "(runs on every GPU of every node under torchrun).")
    p.add_argument("segmentor", help="fcn, pspnet, deeplabv3 or deeplabv3plus (aliases accepted)")
    p.add_argument("dataset", help="voc, ade20k or cityscapes: the checkpoint's dataset, read from --data")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the dataset as downloaded: VOCdevkit/VOC2012, ADEChallengeData2016 or the Cityscapes folder "
                        "(with leftImg8bit/ and gtFine/), or a folder above it")
    p.add_argument("--split", default="val", help="split to evaluate (default val, the published figures)")
    p.add_argument("--limit", type=at_least(1), metavar="N", help="only the first N images (sorted), for a quick check")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="S",
                   help="test-time scales, averaged (default 1.0: the published protocol), e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--flip", action="store_true", help="also average the horizontally mirrored predictions")
    p.add_argument("--mode", choices=["whole", "slide"], help="whole image (the published protocol) or sliding windows")
    p.add_argument("--weights", metavar="PATH_OR_URL", help="checkpoint to use instead of the catalogue's")
    p.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available; under torchrun the GPU "
                                    "of LOCAL_RANK)")
    p.add_argument("--fp16", action="store_true",
                   help="half precision: float16 on CUDA, bfloat16 (or float16) where the CPU has native units "
                        "(refused elsewhere)")
    p.add_argument("--batch-size", type=at_least(1), metavar="N", help="images per forward pass (default 4)")
    p.add_argument("--workers", type=at_least(0), metavar="N",
                   help="processes decoding and resizing images (default: half the CPUs, at most 8; 0: none)")
    p.add_argument("--json", metavar="FILE", help="also write the result (figures, per-class table, confusion "
                                                 "matrix) as JSON")
    add_cache_dir(p)
    add_quiet(p, "no progress bars")
    p.set_defaults(handler=_cmd_eval)
