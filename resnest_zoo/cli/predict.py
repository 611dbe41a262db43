"""``resnest-zoo predict``: segment files, folders, glob patterns and lists of paths into masks, streamed,
resumable, on every GPU of every node under torchrun, without ever losing a file.

The run is :func:`resnest_zoo.inference.batch.segment_to_folder` (README "Batch prediction"); this module adds
the command's checks, which all come before the model is loaded, as one line and exit code 2:

* the output folder is never searched for inputs, so ``resnest-zoo predict .`` run twice does not segment its
  own ``predictions/`` (an output folder equal to the only input folder therefore leaves no input, and says why);
* an input is never written: a run whose mask or overlay would land on one of its inputs is refused;
* an existing file is replaced only with ``--overwrite``; a file this command wrote (it recognises them by the PNG
  text chunk :data:`MARK`) means that input is done, and a rerun skips it; any other file is refused;
* the output folder must be writable (or creatable).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..inference.inputs import IMAGE_SUFFIXES, collect_inputs
from ..inference.outputs import MARK, OUTPUT_FORMATS, written_by_predict
from .common import MODEL_HELP, CommandError, add_cache_dir, add_quiet, model_spec, opacity
from .exit_codes import ExitCode

if TYPE_CHECKING:
    import torch

__all__ = ["register", "iter_images", "written_by_predict", "at_least", "IMAGE_SUFFIXES", "MARK"]


def iter_images(inputs: Sequence[str], *, skip: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(image path, output path without suffix, relative to the output folder) for files and the images inside
    folders and glob patterns (see :func:`resnest_zoo.inference.inputs.collect_inputs`); folder and pattern
    searches leave out everything inside ``skip`` (the output folder: masks are not inputs)."""
    return [(item.path, Path(item.name)) for item in collect_inputs(inputs, exclude=skip)]


def _half_precision(device: torch.device) -> torch.dtype:
    """``--fp16``: float16 on CUDA; on a CPU bfloat16, or float16 where only that is native; refused where
    neither is native, since emulated half precision is many times slower than float32."""
    import torch

    from ..devices import emulated_half_precision

    preferred = (torch.float16, torch.bfloat16) if device.type == "cuda" else (torch.bfloat16, torch.float16)
    for dtype in preferred:
        if emulated_half_precision(device, dtype) is None:
            return dtype
    raise CommandError(f"--fp16: {emulated_half_precision(device, preferred[0])}; drop --fp16", ExitCode.USAGE)


def _runtime_options(args: argparse.Namespace) -> tuple[torch.device, torch.dtype | None]:
    """``--backend onnxruntime|openvino``: the device (the CPU) and ``--fp16``'s precision, every refusal before
    the model is loaded."""
    import torch

    from ..devices import resolve_device
    from ..inference.backends import runtime_dtypes

    if args.backend == "torch":
        raise CommandError("--runtime-file is run by --backend onnxruntime or openvino; add one of them",
                           ExitCode.USAGE)
    if args.device and resolve_device(args.device).type != "cpu":
        raise CommandError(f"--backend {args.backend} runs on the CPU; drop --device {args.device}, or use "
                           f"--backend torch for {args.device}", ExitCode.USAGE)
    if args.runtime_file and args.weights:
        raise CommandError("--runtime-file holds the weights already: drop --weights", ExitCode.USAGE)
    if not args.fp16:
        return torch.device("cpu"), None
    half = [dtype for dtype in (torch.bfloat16, torch.float16) if dtype in runtime_dtypes(args.backend)]
    if not half:
        hint = ("; --backend openvino runs bfloat16 on CPUs with AVX512-BF16 or AMX" if args.backend == "onnxruntime"
                else " on this CPU (half precision needs AVX512-BF16, AMX or AVX512-FP16)")
        raise CommandError(f"--fp16: the {args.backend} backend computes in float32 only{hint}; drop --fp16",
                           ExitCode.USAGE)
    return torch.device("cpu"), half[0]


def _no_input(args: argparse.Namespace, output: Path) -> CommandError:
    holds_output = any(output.resolve() == Path(name).resolve() or Path(name).resolve() in output.resolve().parents
                       for name in args.inputs if Path(name).is_dir())
    why = (f" (the output folder {output} is never searched for inputs; give an output folder outside the input "
           f"folders with -o)" if holds_output else "")
    given = " ".join([*args.inputs, *([f"--list {args.list}"] if args.list else [])])
    return CommandError(f"no input images found in {given}{why}", ExitCode.USAGE)


def _cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..devices import resolve_device
    from ..distributed import device_for, ranks_from_environment, shard
    from ..errors import OutputConflictError, OutputWriteError
    from ..inference.batch import segment_to_folder
    from ..inference.outputs import check_output_folder, plan_outputs

    if not args.inputs and not args.list:
        raise CommandError("give images, folders or glob patterns, or --list FILE", ExitCode.USAGE)
    choice = args.model

    def check_format(dataset: str | None) -> None:  # a saved model's dataset is known once it is loaded
        if args.format == "cityscapes-ids" and dataset != "cityscapes":
            raise CommandError(f"--format cityscapes-ids writes Cityscapes label ids: it needs a cityscapes model, not "
                               f"{choice}; use --format png or npy", ExitCode.USAGE)

    if choice.saved is None:
        check_format(choice.dataset)
    output = Path(args.output)
    work = collect_inputs(args.inputs, list_file=args.list, exclude=output)
    if not work or not any(item.path.exists() for item in work):
        raise _no_input(args, output)
    ranks = ranks_from_environment()
    try:
        check_output_folder(output)
        planned = plan_outputs(shard(work, ranks), output, args.format, args.overlay, args.overwrite, inputs=work)
    except (OutputWriteError, OutputConflictError) as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    if args.backend != "torch" or args.runtime_file:
        device, dtype = _runtime_options(args)
        model = choice.load(weights=args.weights, cache_dir=args.cache_dir,
                            progress=not args.quiet and ranks.is_main, backend=args.backend, runtime_file=args.runtime_file)
    else:
        device = device_for(resolve_device(args.device) if args.device else None, ranks)
        dtype = _half_precision(device) if args.fp16 else None
        # inference only: BatchNorm folded into the convolutions (same predictions, faster)
        model = choice.load(weights=args.weights, device=device, cache_dir=args.cache_dir,
                            progress=not args.quiet and ranks.is_main, optimize=True)
    check_format(model.config.dataset)

    def report(path: str, reason: str) -> None:
        tqdm.write(f"error: {path}: {reason}", file=sys.stderr)

    try:
        summary = segment_to_folder(model, planned, output, format=args.format,
                                    alpha=args.alpha if args.overlay else None, overwrite=args.overwrite,
                                    progress=not args.quiet and len(work) > 1, report=report, device=device,
                                    dtype=dtype, batch_size=args.batch_size, workers=args.workers,
                                    writers=args.writers)
    except OutputWriteError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    if not args.quiet and ranks.is_main:
        print(summary, file=sys.stderr)
    if summary.failed:
        return ExitCode.PARTIAL if summary.done + summary.skipped else ExitCode.USAGE
    return ExitCode.OK


def at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def register(add) -> None:
    """Add the ``predict`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("predict", "Segment images: one indexed PNG mask (dataset palette) per input, optionally an overlay; "
                       "streamed, resumable (a rerun skips what is done), on every GPU under torchrun. Inputs are "
                       "never written, the output folder is never read as input, and a file this command did not "
                       "write is never replaced without --overwrite.")
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR",
                   help="image files, folders (searched recursively) and glob patterns such as 'photos/**/*.jpg'")
    p.add_argument("--list", metavar="FILE", help="a text file of image paths, one per line (relative to its folder)")
    p.add_argument("-m", "--model", required=True, type=model_spec, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--weights", metavar="PATH_OR_URL", help="checkpoint to use instead of the catalogue's")
    p.add_argument("-o", "--output", default="predictions", metavar="OUT_DIR", help="output folder (default: predictions)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="png",
                   help="png: indexed PNG, the dataset palette (default); cityscapes-ids: official Cityscapes label "
                        "ids for the evaluation server; npy: class ids as a NumPy array")
    p.add_argument("--overlay", action="store_true", help="also write IMAGE_overlay.png, the mask blended on the image")
    p.add_argument("--alpha", type=opacity, default=0.5, help="overlay opacity of the mask (default 0.5)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo inputs whose outputs exist, and replace files in OUT_DIR that resnest-zoo predict did "
                        "not write (by default a rerun skips what is done; inputs are never written)")
    p.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available; under torchrun the GPU of "
                                    "LOCAL_RANK)")
    p.add_argument("--fp16", action="store_true", help="half precision: float16 on CUDA, bfloat16 on CPUs with AVX512-BF16/AMX (refused elsewhere)")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default="torch",
                   help="who runs the network: PyTorch (default), or ONNX Runtime / OpenVINO on the CPU (the checkpoint "
                        "exported at load, or --runtime-file); same preprocessing and masks. Needs pip install "
                        "\"resnest-zoo[onnx]\" or \"resnest-zoo[openvino]\"")
    p.add_argument("--runtime-file", metavar="FILE",
                   help="with --backend onnxruntime/openvino: a file written by resnest-zoo export --format onnx / "
                        "openvino for this model, run instead of the checkpoint (nothing is downloaded)")
    p.add_argument("--batch-size", type=at_least(1), metavar="N",
                   help="images per forward pass (default 4)")
    p.add_argument("--workers", type=at_least(0), metavar="N",
                   help="processes reading images (default: half the CPUs, at most 8; 0: none)")
    p.add_argument("--writers", type=at_least(1), metavar="N",
                   help="threads encoding and writing outputs (default 4)")
    add_cache_dir(p)
    add_quiet(p, "no progress bars or summary")
    p.set_defaults(handler=_cmd_predict)
