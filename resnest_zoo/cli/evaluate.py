"""``resnest-zoo eval``: a checkpoint's mIoU on the user's copy of its dataset, on one process or under torchrun."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import BATCH_SIZE, SPLIT
from .common import (
    CommandError,
    add_cache_dir,
    add_models,
    add_quiet,
    add_workers,
    at_least,
    saved_only,
    selected_models,
)
from .exit_codes import ExitCode
from .predict import DEVICE_HELP, FP16_HELP

__all__ = ["register"]


def _check_data(dataset: str, args: argparse.Namespace) -> None:
    from ..datasets import READERS
    from ..errors import DatasetError

    try:
        READERS[dataset].samples(args.data, args.split)
    except DatasetError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None


def _positive(text: str) -> float:
    """A positive finite number (argparse type, for ``--scales``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number such as 0.75 or 1.25, got {text!r}")
    return value


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..api import load_model
    from ..devices import half_precision, resolve_device
    from ..distributed import device_for, ranks_from_environment
    from ..errors import DatasetError, ImageReadError, OutputWriteError
    from ..evaluation.runner import evaluate
    from ..files import atomic_write, check_output

    models = selected_models(args, "eval")
    if len(models) > 1:
        raise CommandError("eval evaluates one model: give one -m MODEL", ExitCode.USAGE)
    name = models[0]
    if name.saved is None:
        _check_data(name.dataset, args)  # the data first: before any download or load
    else:
        saved_only(name, {"--weights": args.weights, "--cache-dir": args.cache_dir})
    if args.json is not None:  # before hours of work, not after
        check_output(args.json, what="--json file", hint="choose a file in a folder you can write to")
    ranks = ranks_from_environment()
    device = device_for(resolve_device(args.device) if args.device else None, ranks)
    try:
        dtype = half_precision(device) if args.fp16 else None  # the same rule as predict
    except ValueError as exc:
        raise CommandError(f"--fp16: {exc}; drop --fp16", ExitCode.USAGE) from None
    options = dict(weights=args.weights, cache_dir=args.cache_dir) if name.saved is None else {}
    model = load_model(name, device=device, progress=not args.quiet and ranks.is_main, optimize=True, **options)
    if name.saved is not None:
        dataset = model.config.dataset
        if dataset is None:
            raise CommandError(f"{name} has classes of its own ({model.config.num_classes}: "
                               f"{', '.join(model.config.class_names[:5])}{' ...' if model.config.num_classes > 5 else ''}"
                               f"); eval reads the annotations of VOC, ADE20K or Cityscapes, so it evaluates models "
                               f"of those classes only (evaluate your own data with the training loop's metric)",
                               ExitCode.USAGE)
        _check_data(dataset, args)
    try:
        result = evaluate(model, args.data, split=args.split, limit=args.limit, mode=args.mode, scales=args.scales,
                          flip=args.flip, dtype=dtype, device=device, batch_size=args.batch_size,
                          workers=args.workers, progress=not args.quiet)
    except (DatasetError, ImageReadError) as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    if ranks.is_main:
        print(result)
        sys.stdout.flush()
        if args.json is not None:
            try:
                with atomic_write(args.json) as temporary:
                    temporary.write_text(result.to_json(), encoding="utf-8")
            except OSError as exc:  # the figures are printed above: only the file is lost
                raise OutputWriteError(f"the results above could not be written to {args.json} "
                                       f"({exc.strerror or exc})") from None
    return ExitCode.OK


def register(add) -> None:
    """Add the ``eval`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("eval", "Evaluate a checkpoint on a copy of its dataset: per-class IoU, mIoU against the published figure "
                    "(runs on every GPU of every node under torchrun).")
    add_models(p, several=False, legacy=True,
               extra="; a saved model is evaluated on its dataset, so it must have that dataset's classes")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the dataset as downloaded: VOCdevkit/VOC2012, ADEChallengeData2016 or the Cityscapes folder "
                        "(with leftImg8bit/ and gtFine/), or a folder above it")
    p.add_argument("--split", default=SPLIT, help=f"split to evaluate (default {SPLIT}, the published figures)")
    p.add_argument("--limit", type=at_least(1), metavar="N", help="only the first N images (sorted), for a quick check")
    p.add_argument("--scales", type=_positive, nargs="+", default=[1.0], metavar="S",
                   help="test-time scales, averaged (default 1.0: the published protocol), e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--flip", action="store_true", help="also average the horizontally mirrored predictions")
    p.add_argument("--mode", choices=["whole", "slide"], help="whole image (the published protocol) or sliding windows")
    p.add_argument("--weights", metavar="PATH_OR_URL", help="checkpoint to use instead of the catalogue's")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--fp16", action="store_true", help=FP16_HELP)
    p.add_argument("--batch-size", type=at_least(1), metavar="N", help=f"images per forward pass (default {BATCH_SIZE})")
    add_workers(p, "decoding and resizing images")
    p.add_argument("--json", metavar="FILE", help="also write the result (figures, per-class table, confusion "
                                                 "matrix) as JSON")
    add_cache_dir(p)
    add_quiet(p, "no progress display")
    p.set_defaults(handler=_cmd_eval)
