"""``resnest-zoo eval``: a checkpoint's mIoU on the user's copy of its dataset, on one process or under torchrun."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalogue import get_entry
from .common import MODEL_HELP, CommandError, ModelChoice, add_cache_dir, add_quiet, model_spec
from .exit_codes import ExitCode
from .predict import _half_precision, at_least

__all__ = ["register"]


def _model_choice(args: argparse.Namespace) -> ModelChoice:
    """``SEGMENTOR DATASET`` or ``-m MODEL``, exactly one of them."""
    positional = [name for name in (args.segmentor, args.dataset) if name is not None]
    if args.model is not None:
        if positional:
            raise CommandError(f"give SEGMENTOR DATASET or -m MODEL, not both (got {' '.join(positional)} and "
                               f"-m {args.model})", ExitCode.USAGE)
        return args.model
    if len(positional) != 2:
        raise CommandError("give SEGMENTOR DATASET (such as deeplabv3plus cityscapes), or -m MODEL for a saved "
                           "model's folder or hf:ORG/NAME", ExitCode.USAGE)
    entry = get_entry(args.segmentor, args.dataset)  # an unknown name: UnknownModelError, one line and exit 2
    return ModelChoice(entry.segmentor, entry.dataset)


def _check_data(dataset: str, args: argparse.Namespace) -> None:
    from ..datasets import READERS
    from ..errors import DatasetError

    try:
        READERS[dataset].samples(args.data, args.split)
    except DatasetError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..distributed import device_for, ranks_from_environment
    from ..errors import DatasetError, ImageReadError
    from ..evaluation.runner import evaluate
    from ..inference.outputs import write_atomically

    choice = _model_choice(args)
    if choice.saved is None:
        _check_data(choice.dataset, args)  # the data first: before any download or load
    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise CommandError(f"--json {json_path}: folder {str(json_path.parent)!r} does not exist", ExitCode.USAGE)
    ranks = ranks_from_environment()
    device = device_for(resolve_device(args.device) if args.device else None, ranks)
    dtype = _half_precision(device) if args.fp16 else None  # the same rule as predict
    model = choice.load(weights=args.weights, device=device, cache_dir=args.cache_dir,
                        progress=not args.quiet and ranks.is_main, optimize=True)
    if choice.saved is not None:
        dataset = model.config.dataset
        if dataset is None:
            raise CommandError(f"{choice} has classes of its own ({model.config.num_classes}: "
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
        if json_path is not None:
            write_atomically(json_path, lambda handle: handle.write(result.to_json().encode("utf-8")))
    return ExitCode.OK


def register(add) -> None:
    """Add the ``eval`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("eval", "Evaluate a checkpoint on a copy of its dataset: per-class IoU, mIoU against the published figure "
                    "(runs on every GPU of every node under torchrun).")
    p.add_argument("segmentor", nargs="?", help="fcn, pspnet, deeplabv3 or deeplabv3plus (aliases accepted)")
    p.add_argument("dataset", nargs="?", help="voc, ade20k or cityscapes: the checkpoint's dataset, read from --data")
    p.add_argument("-m", "--model", type=model_spec, metavar="MODEL",
                   help=f"instead of SEGMENTOR DATASET: {MODEL_HELP}; a saved model is evaluated on its dataset, "
                        "so it must have that dataset's classes")
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
