"""``resnest-zoo predict``: segment files, folders, glob patterns and lists of paths into masks, streamed,
resumable, on every GPU of every node under torchrun, without ever losing a file.

The run is :func:`resnest_zoo.inference.batch.segment_to_folder` (docs/batch-prediction.md); this module adds
the command's checks, which all come before the model is loaded, as one line and exit code 2:

* the output folder is never searched for inputs, so ``resnest-zoo predict .`` run twice does not segment its
  own ``predictions/`` (an output folder equal to the only input folder therefore leaves no input, and says why);
* an input is never written: a run whose mask or overlay would land on one of its inputs is refused;
* an existing file is replaced only with ``--overwrite``; a file this command wrote (it recognises them by the PNG
  text chunk :data:`resnest_zoo.inference.outputs.MARK`) means that input is done, and a rerun skips it; any other file is refused;
* the output folder must be writable (or creatable).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..installation import install_command
from ..options import ALPHA, BACKENDS, BATCH_SIZE, MASK_FORMATS, WRITERS
from .common import (
    CommandError,
    add_cache_dir,
    add_models,
    add_quiet,
    add_workers,
    at_least,
    deprecated,
    opacity,
    saved_only as _saved_only,
)
from .exit_codes import ExitCode

__all__ = ["register"]


def _no_input(args: argparse.Namespace, output: Path) -> CommandError:
    """Why there is nothing to do: no images at all, or all of them inside the output folder (which is never
    searched for inputs)."""
    from ..inference.inputs import collect_inputs

    given = " ".join([*args.inputs, *([f"--list {args.list}"] if args.list else [])])
    hidden = [item for item in collect_inputs(args.inputs, list_file=args.list) if item.path.exists()]
    if hidden:
        return CommandError(f"the {len(hidden)} image(s) found in {given} are all inside the output folder, and the "
                            f"output folder {output} is never searched for inputs (it holds masks): give an output "
                            f"folder outside the input folders with -o", ExitCode.USAGE)
    return CommandError(f"no input images found in {given}", ExitCode.USAGE)


def _precision(args: argparse.Namespace, device) -> object:
    """``--fp16``'s precision on ``device`` (or for the runtime backend), or None; refused where not native."""
    if not args.fp16:
        return None
    from ..deploy.runtime import runtime_half_precision
    from ..devices import half_precision

    try:
        return half_precision(device) if args.backend == "torch" else runtime_half_precision(args.backend)
    except ValueError as exc:
        raise CommandError(f"--fp16: {exc}; drop --fp16", ExitCode.USAGE) from None


def _device(args: argparse.Namespace, ranks) -> object:
    """The device to compute on: the CPU for a runtime backend (refusing another), else ``--device`` (under
    torchrun, the GPU of ``LOCAL_RANK``); every refusal before the model is loaded."""
    from ..devices import resolve_device
    from ..distributed import device_for

    if args.runtime_file and args.backend == "torch":
        raise CommandError("--runtime-file is run by --backend onnxruntime or openvino; add one of them",
                           ExitCode.USAGE)
    if args.runtime_file and args.weights:
        raise CommandError("--runtime-file holds the weights already: drop --weights", ExitCode.USAGE)
    if args.backend == "torch":
        return device_for(resolve_device(args.device) if args.device else None, ranks)
    if args.device and resolve_device(args.device).type != "cpu":
        raise CommandError(f"--backend {args.backend} runs on the CPU; drop --device {args.device}, or use "
                           f"--backend torch for {args.device}", ExitCode.USAGE)
    return resolve_device("cpu")


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..api import load_model
    from ..distributed import ranks_from_environment, shard
    from ..errors import OutputConflictError, OutputWriteError
    from ..inference.batch import segment_to_folder
    from ..inference.inputs import collect_inputs
    from ..inference.outputs import check_output_folder, plan_outputs
    from .common import selected_models

    if args.format is not None:
        deprecated("`resnest-zoo predict --format` is the old spelling of `--mask-format`")
        args.mask_format = args.format
    if not args.inputs and not args.list:
        raise CommandError("give images, folders or glob patterns, or --list FILE", ExitCode.USAGE)
    names = selected_models(args, "predict")
    if len(names) > 1:
        raise CommandError("predict segments with one model: give one -m MODEL", ExitCode.USAGE)
    name = names[0]

    def check_format(dataset: str | None) -> None:  # a saved model's dataset is known once it is loaded
        if args.mask_format == "cityscapes-ids" and dataset != "cityscapes":
            raise CommandError(f"--mask-format cityscapes-ids writes Cityscapes label ids: it needs a cityscapes "
                               f"model, not {name}; use --mask-format png or npy", ExitCode.USAGE)

    if name.saved is None:
        check_format(name.dataset)
    output = Path(args.output)
    work = collect_inputs(args.inputs, list_file=args.list, exclude=output)
    if not work or not any(item.path.exists() or item.path.is_symlink() for item in work):
        raise _no_input(args, output)
    ranks = ranks_from_environment()
    try:
        check_output_folder(output)
        planned = plan_outputs(shard(work, ranks), output, args.mask_format, args.overlay, args.overwrite, inputs=work)
    except (OutputWriteError, OutputConflictError) as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    device = _device(args, ranks)
    dtype = _precision(args, device)
    options = dict(backend=args.backend, runtime_file=args.runtime_file) if args.backend != "torch" else \
        dict(device=device, optimize=True)  # inference only: BatchNorm folded into the convolutions, same masks
    if name.saved is None:
        options.update(weights=args.weights, cache_dir=args.cache_dir)
    else:
        _saved_only(name, {"--weights": args.weights, "--cache-dir": args.cache_dir, "--runtime-file": args.runtime_file})
    model = load_model(name, progress=not args.quiet and ranks.is_main, **options)
    check_format(model.config.dataset)
    try:
        summary = segment_to_folder(model, planned, output, format=args.mask_format,
                                    alpha=args.alpha if args.overlay else None, overwrite=args.overwrite,
                                    progress=not args.quiet and len(work) > 1, device=device, dtype=dtype,
                                    batch_size=args.batch_size, workers=args.workers, writers=args.writers)
    except OutputWriteError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    if not args.quiet and ranks.is_main:
        print(summary, file=sys.stderr)
    if summary.failed:
        return ExitCode.PARTIAL if summary.done + summary.skipped else ExitCode.USAGE
    return ExitCode.OK


FP16_HELP = ("half precision: float16 on CUDA, bfloat16 (or float16) where the CPU or runtime has native units "
             "(refused elsewhere)")
DEVICE_HELP = "cuda, cuda:1, cpu ... (default: cuda when available; under torchrun the GPU of LOCAL_RANK)"
BACKEND_HELP = ("who runs the network: PyTorch (default), or ONNX Runtime / OpenVINO on the CPU (the checkpoint "
                "exported at load, or --runtime-file); same preprocessing and masks. Needs "
                f"{install_command('onnx')} or {install_command('openvino')}")


def register(add) -> None:
    """Add the ``predict`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("predict", "Segment images: one indexed PNG mask (dataset palette) per input, optionally an overlay; "
                       "streamed, resumable (a rerun skips what is done), on every GPU under torchrun. Inputs are "
                       "never written, the output folder is never read as input, and a file this command did not "
                       "write is never replaced without --overwrite.")
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR",
                   help="image files, folders (searched recursively, following links) and glob patterns such as "
                        "'photos/**/*.jpg'")
    p.add_argument("--list", metavar="FILE", help="a text file of image paths, one per line (relative to its folder)")
    add_models(p, several=False)
    p.add_argument("--weights", metavar="PATH_OR_URL", help="checkpoint to use instead of the catalogue's")
    p.add_argument("-o", "--output", default="predictions", metavar="OUT_DIR", help="output folder (default: predictions)")
    p.add_argument("--mask-format", choices=MASK_FORMATS, default=MASK_FORMATS[0],
                   help="png: indexed PNG, the dataset palette (default); cityscapes-ids: official Cityscapes label "
                        "ids for the evaluation server; npy: class ids as a NumPy array")
    p.add_argument("--format", choices=MASK_FORMATS, help=argparse.SUPPRESS)  # the old spelling of --mask-format
    p.add_argument("--overlay", action="store_true", help="also write IMAGE_overlay.png, the mask blended on the image")
    p.add_argument("--alpha", type=opacity, default=ALPHA, help=f"overlay opacity of the mask (default {ALPHA})")
    p.add_argument("--overwrite", action="store_true",
                   help="redo inputs whose outputs exist, and replace files in OUT_DIR that resnest-zoo predict did "
                        "not write (by default a rerun skips what is done; inputs are never written)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--fp16", action="store_true", help=FP16_HELP)
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0], help=BACKEND_HELP)
    p.add_argument("--runtime-file", metavar="FILE",
                   help="with --backend onnxruntime/openvino: a file written by resnest-zoo export --format onnx / "
                        "openvino for this model, run instead of the checkpoint (nothing is downloaded)")
    p.add_argument("--batch-size", type=at_least(1), metavar="N",
                   help=f"images per forward pass (default {BATCH_SIZE})")
    add_workers(p)
    p.add_argument("--writers", type=at_least(1), metavar="N",
                   help=f"threads encoding and writing outputs (default {WRITERS})")
    add_cache_dir(p)
    add_quiet(p, "no progress display or summary")
    p.set_defaults(handler=_cmd_predict)
