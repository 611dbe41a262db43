"""``resnest-zoo list | download | verify | export``: the catalogue's checkpoints and their files."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalogue import catalogue
from ..installation import install_command
from ..naming import HUB_PREFIX, ModelName
from ..options import CALIBRATION_HELP, CALIBRATION_SIZE, HELD_OUT, MAX_MIOU_DROP, MIN_CALIBRATION_IMAGES, OPSET, OPSETS, PRECISIONS
from .common import (
    CommandError,
    add_cache_dir,
    at_least,
    add_models,
    add_quiet,
    human_size,
    print_table,
    saved_only,
    selected_models,
)
from .exit_codes import ExitCode

__all__ = ["register"]

_RUNTIME_FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
INT8_SUFFIX = ".int8"
"""What ``export --int8`` puts before ``.xml`` (``deeplabv3plus_..._cityscapes.int8.xml``)."""


def _cmd_list(args: argparse.Namespace) -> int:
    from ..weights.cache import cached_files

    if args.urls:  # for machines without network: fetch these elsewhere, then copy them into the cache or a mirror
        print_table([[e.segmentor, e.dataset, e.filename, e.url] for e in catalogue().values()],
                    ["segmentor", "dataset", "file", "url"])
        return ExitCode.OK
    cached = {(r.entry.segmentor, r.entry.dataset) for r in cached_files(args.cache_dir) if r.entry is not None}
    rows = [
        [f"{e.segmentor}/{e.dataset}", str(e.num_classes), f"{e.miou:.2f}", human_size(e.size),
         "yes" if e.key in cached else "no", e.hub_name]
        for e in catalogue().values()
    ]
    print_table(rows, ["model", "classes", "mIoU %", "size", "cached", "torch.hub name"])
    if any(e.size is None for e in catalogue().values()):
        print("\nsize '-': not pinned in the catalogue yet (`resnest-zoo verify FILE` prints it from the real file)")
    return ExitCode.OK


def _cmd_download(args: argparse.Namespace) -> int:
    from ..api import download
    from ..weights.saved import read_saved

    for name in selected_models(args, "download"):
        if name.saved is None:
            print(download(name.segmentor, name.dataset, cache_dir=args.cache_dir, progress=not args.quiet,  # type: ignore[arg-type]
                           sha256=args.sha256, force=args.force))
            continue
        if not name.saved.startswith(HUB_PREFIX):
            raise CommandError(f"{name} is a saved model's folder on this machine: there is nothing to download",
                               ExitCode.USAGE)
        saved_only(name, {"--sha256": args.sha256, "--force": args.force, "--cache-dir": args.cache_dir})
        print(read_saved(name.saved, progress=not args.quiet).weights)
    return ExitCode.OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..weights.integrity import verify

    status = ExitCode.OK
    for name in args.files:
        if not Path(name).is_file():
            raise CommandError(f"{name}: no such file", ExitCode.USAGE)
        digest = verify(name)
        print(f"{digest.sha256}  {digest.size}  {digest.path}")
        if args.sha256 and digest.sha256 != args.sha256.lower():
            print(f"error: {name}: sha256 is {digest.sha256}, expected {args.sha256.lower()}", file=sys.stderr)
            status = ExitCode.UNAVAILABLE
    return status


def _cmd_export(args: argparse.Namespace) -> int:
    from ..files import check_output

    models = selected_models(args, "export")
    if args.weights and len(models) > 1:
        raise CommandError("--weights names one file: give one model with -m", ExitCode.USAGE)
    if args.hub_folder is not None:
        given = [flag for flag, value in (("--format", args.format != "safetensors"), ("--dtype", args.dtype),
                                          ("--opset", args.opset)) if value]
        if given:
            raise CommandError(f"--hub-folder writes float32 safetensors with config.json and a model card: drop "
                               f"{', '.join(given)}", ExitCode.USAGE)
    elif args.format == "safetensors" and args.opset is not None:
        raise CommandError("--opset applies to --format onnx or openvino", ExitCode.USAGE)
    elif args.format != "safetensors" and args.dtype is not None:
        raise CommandError(f"--dtype applies to --format safetensors: a {args.format} file keeps float32 weights and "
                           f"the precision is chosen when it runs (predict --fp16)", ExitCode.USAGE)
    _check_int8_options(args)
    for name in models:
        if name.saved is not None and (args.hub_folder is not None or args.format == "safetensors"):
            raise CommandError(f"{name} is a saved model already (its model.safetensors and config.json): export it "
                               f"with --format onnx or openvino", ExitCode.USAGE)
        if name.saved is not None:
            saved_only(name, {"--weights": args.weights, "--cache-dir": args.cache_dir})
    destination = args.hub_folder if args.hub_folder is not None else args.output
    check_output(destination, folder=True, hint="choose a folder you can write to")  # before any work
    if args.hub_folder is not None:
        from ..publish import export_hub_folder

        for name in models:
            print(export_hub_folder(name.segmentor, name.dataset, args.hub_folder, weights=args.weights,  # type: ignore[arg-type]
                                    cache_dir=args.cache_dir, progress=not args.quiet))
    elif args.format == "safetensors":
        from ..devices import dtype_of
        from ..publish import export

        for name in models:
            print(export(name.segmentor, name.dataset, args.output, dtype=dtype_of(args.dtype or "float32"),  # type: ignore[arg-type]
                         weights=args.weights, cache_dir=args.cache_dir, progress=not args.quiet))
    else:
        _export_runtime_files(args, models)
    return ExitCode.OK


def _check_int8_options(args: argparse.Namespace) -> None:
    """``--int8`` and its options go together, with ``--format openvino -o DIR``."""
    given = [flag for flag, value in (("--calibration", args.calibration is not None),
                                      ("--calibration-size", args.calibration_size is not None),
                                      ("--max-miou-drop", args.max_miou_drop is not None)) if value]
    if not args.int8:
        if given:
            raise CommandError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --int8", ExitCode.USAGE)
        return
    if args.format != "openvino" or args.hub_folder is not None:
        raise CommandError("--int8 quantizes an OpenVINO IR: use it with --format openvino -o DIR", ExitCode.USAGE)
    if args.calibration is None:
        raise CommandError(f"--int8 needs --calibration SOURCE: {CALIBRATION_HELP}", ExitCode.USAGE)


def _export_runtime_files(args: argparse.Namespace, models: list[ModelName]) -> None:
    """``export --format onnx|openvino``: each model, verified, as a runtime file recording its source's sha256."""
    from ..api import load, load_model
    from ..catalogue import get_entry
    from ..deploy.onnx import check_opset, export_onnx
    from ..deploy.openvino import export_openvino
    from ..deploy.optional import require
    from ..models.strict import fits
    from ..weights.sources import resolve

    opset = OPSET if args.opset is None else args.opset
    exporter, needs = {"onnx": (export_onnx, ("onnx",)), "openvino": (export_openvino, ("openvino", "onnx"))}[args.format]
    suffix = _RUNTIME_FORMATS[args.format]
    if args.int8:
        from ..deploy.int8 import export_openvino_int8

        def exporter(model, path, **options):  # type: ignore[no-redef]
            return export_openvino_int8(model, path, calibration=args.calibration, progress=not args.quiet,
                                        calibration_size=args.calibration_size or CALIBRATION_SIZE,
                                        max_miou_drop=MAX_MIOU_DROP if args.max_miou_drop is None else args.max_miou_drop,
                                        **options)

        needs, suffix = (*needs, "nncf"), INT8_SUFFIX + suffix
    check_opset(opset)  # every refusal before any download
    for module in needs:
        require(module, f"--format {args.format}")
    output = Path(args.output)
    for name in models:
        if name.saved is not None:
            model = load_model(name, device="cpu", progress=not args.quiet)
            stem = Path(name.saved.removeprefix(HUB_PREFIX)).name
            source_sha256 = model.source_sha256
        else:
            entry = get_entry(name.segmentor, name.dataset)  # type: ignore[arg-type]
            found = resolve(entry, check=fits(entry), weights=args.weights, cache_dir=args.cache_dir,
                            progress=not args.quiet, digest=True)
            model = load(entry.segmentor, entry.dataset, weights=found.path, device="cpu")
            stem, source_sha256 = Path(entry.filename).stem, found.sha256
        written = exporter(model, output / (stem + suffix), opset=opset, source_sha256=source_sha256)
        print(written)
        if args.int8:
            _print_quantization(written)


def _print_quantization(path: Path) -> None:
    """The figures an INT8 file carries (read back from it), indented under its path."""
    from ..deploy.openvino import openvino_core
    from ..formats.runtime import FORMAT_KEY, parse_metadata

    info = openvino_core().read_model(str(path)).get_rt_info()[FORMAT_KEY]
    report = parse_metadata({key: value.astype(str) for key, value in info.items()}, where=str(path)).quantization
    print("\n".join(f"  {line}" for line in str(report).splitlines()))


def _points(text: str) -> float:
    """An mIoU drop in points, 0 to 100 (argparse type, for ``--max-miou-drop``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected mIoU points from 0 to 100 such as 1 or 0.5, got {text!r}")
    return value


def register(add) -> None:
    """Add the commands; ``add(name, help)`` returns a new sub-parser."""
    p = add("list", "Show the twelve catalogue checkpoints: classes, reported mIoU, file size, whether cached.")
    p.add_argument("--urls", action="store_true",
                   help="instead, the file name and download URL of each checkpoint (to fetch them on another "
                        "machine for one without network)")
    add_cache_dir(p)
    p.set_defaults(handler=_cmd_list)

    p = add("download", "Download, verify and cache checkpoints (or a saved model from the Hub); print their local "
                        "paths.")
    add_models(p, several=True, legacy=True)
    p.add_argument("--sha256", help="expected sha256 of the file, checked in addition to the catalogue's pin")
    p.add_argument("--force", action="store_true", help="download again even when a verified copy is cached")
    add_cache_dir(p)
    add_quiet(p)
    p.set_defaults(handler=_cmd_download)

    p = add("verify", "Print the sha256 digest and size of checkpoint files (to pin them in the catalogue).")
    p.add_argument("files", nargs="+", metavar="FILE", help="checkpoint files (.pth or .safetensors)")
    p.add_argument("--sha256", help="exit with 3 unless every FILE has this digest")
    p.set_defaults(handler=_cmd_verify)

    p = add("export", "Write model-only safetensors files, ready to publish on a model hub; or, with --format onnx / "
                      "openvino, the network as an ONNX file / OpenVINO IR for deployment.")
    add_models(p, several=True, legacy=True)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--output", help="folder to write into (created if missing)")
    target.add_argument("--hub-folder", metavar="DIR",
                        help="instead, each checkpoint as a saved-model folder DIR/NAME for the Hugging Face Hub: "
                             "float32 model.safetensors, config.json, and a README.md model card (published mIoU, "
                             "schedule, class table, links to the release); resnest_zoo.from_pretrained loads it")
    p.add_argument("--format", choices=["safetensors", *_RUNTIME_FORMATS], default="safetensors",
                   help="safetensors: the checkpoint's model tensors (default); onnx: NAME.onnx; openvino: NAME.xml + "
                        "NAME.bin -- logits at the input size, batch/height/width dynamic, classes, palette, "
                        "mean/std, resize rule and the checkpoint's sha256 in the metadata (needs "
                        f"{install_command('onnx')} or {install_command('openvino')})")
    p.add_argument("--opset", type=int, help=f"ONNX opset for --format onnx/openvino (default {OPSET}; "
                                             f"{OPSETS.start} to {OPSETS.stop - 1})")
    p.add_argument("--int8", action="store_true",
                   help="with --format openvino: quantize to INT8 with NNCF (post-training, calibrated on --calibration; "
                        f"NAME{INT8_SUFFIX}.xml), the label agreement with float32 and, with labelled calibration data, "
                        f"the mIoU drop measured and written into the file (needs {install_command('int8')})")
    p.add_argument("--calibration", metavar="SOURCE", help=f"for --int8: {CALIBRATION_HELP}")
    p.add_argument("--calibration-size", type=at_least(MIN_CALIBRATION_IMAGES), metavar="N",
                   help=f"for --int8: images to calibrate on, evenly spaced through SOURCE (default {CALIBRATION_SIZE}; "
                        f"plus {HELD_OUT:g} x N more held out to measure the result)")
    p.add_argument("--max-miou-drop", type=_points, metavar="D",
                   help=f"for --int8 with a labelled SOURCE: the largest mIoU drop accepted, in points (default "
                        f"{MAX_MIOU_DROP:g}); layers that cost accuracy stay in floating point until it holds, or the "
                        f"command fails with exit code {int(ExitCode.ACCURACY)}")
    p.add_argument("--dtype", choices=PRECISIONS,
                   help=f"dtype of the floating tensors written, for --format safetensors (default {PRECISIONS[0]})")
    p.add_argument("--weights", help="a local checkpoint file or URL instead of the catalogue's")
    add_cache_dir(p)
    add_quiet(p)
    p.set_defaults(handler=_cmd_export)
