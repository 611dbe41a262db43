"""``resnest-zoo list | download | verify | export``: the catalogue's checkpoints and their files."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalogue import catalogue
from .common import (
    CommandError,
    add_cache_dir,
    add_entry_choice,
    add_quiet,
    human_size,
    print_table,
    selected_entries,
)
from .exit_codes import ExitCode

__all__ = ["register"]


def _cmd_list(args: argparse.Namespace) -> int:
    from ..weights.cache import cached_files

    if args.urls:  # for machines without network: fetch these elsewhere, then copy them into the cache or a mirror
        print_table([[e.segmentor, e.dataset, e.filename, e.url] for e in catalogue().values()],
                    ["segmentor", "dataset", "file", "url"])
        return ExitCode.OK
    cached = {(r.entry.segmentor, r.entry.dataset) for r in cached_files(args.cache_dir) if r.entry is not None}
    rows = [
        [e.segmentor, e.dataset, str(e.num_classes), f"{e.miou:.2f}", human_size(e.size),
         "yes" if e.key in cached else "no", e.hub_name]
        for e in catalogue().values()
    ]
    print_table(rows, ["segmentor", "dataset", "classes", "mIoU %", "size", "cached", "torch.hub name"])
    if any(e.size is None for e in catalogue().values()):
        print("\nsize '-': not pinned in the catalogue yet (`resnest-zoo verify FILE` prints it from the real file)")
    return ExitCode.OK


def _cmd_download(args: argparse.Namespace) -> int:
    from ..weights.sources import download

    for segmentor, dataset in selected_entries(args):
        path = download(segmentor, dataset, cache_dir=args.cache_dir, progress=not args.quiet, sha256=args.sha256,
                        force=args.force)
        print(path)
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
    import torch

    from ..deploy.safetensors import export

    if args.weights and args.all:
        raise CommandError("--weights names one file: use it with SEGMENTOR DATASET, not --all", ExitCode.USAGE)
    if args.hub_folder is not None:
        return _export_hub_folders(args)
    if args.format != "safetensors":
        return _export_runtime_files(args)
    if args.opset is not None:
        raise CommandError("--opset applies to --format onnx or openvino", ExitCode.USAGE)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype or "float32"]
    for segmentor, dataset in selected_entries(args):
        path = export(segmentor, dataset, args.output, dtype=dtype, weights=args.weights,
                      cache_dir=args.cache_dir, progress=not args.quiet)
        print(path)
    return ExitCode.OK


def _export_hub_folders(args: argparse.Namespace) -> int:
    """``export --hub-folder DIR``: each checkpoint as a saved-model folder ``DIR/NAME`` for the Hugging Face Hub."""
    from ..deploy.hub_folder import export_hub_folder

    given = [flag for flag, value in (("--format", args.format != "safetensors"), ("--dtype", args.dtype),
                                      ("--opset", args.opset)) if value]
    if given:
        raise CommandError(f"--hub-folder writes float32 safetensors with config.json and a model card: drop "
                           f"{', '.join(given)}", ExitCode.USAGE)
    for segmentor, dataset in selected_entries(args):
        print(export_hub_folder(segmentor, dataset, args.hub_folder, weights=args.weights, cache_dir=args.cache_dir,
                                progress=not args.quiet))
    return ExitCode.OK


def _export_runtime_files(args: argparse.Namespace) -> int:
    """``export --format onnx|openvino``: each checkpoint, verified, as a runtime file recording its sha256."""
    from ..api import load
    from ..catalogue import get_entry
    from ..deploy.onnx import DEFAULT_OPSET, check_opset, check_writable, export_onnx
    from ..deploy.openvino import export_openvino
    from ..deploy.optional import require
    from ..weights.integrity import verify
    from ..weights.sources import download_entry, download_url, is_url

    if args.dtype is not None:
        raise CommandError(f"--dtype applies to --format safetensors: a {args.format} file keeps float32 weights and "
                           f"the precision is chosen when it runs (predict --fp16)", ExitCode.USAGE)
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    exporter, suffix, needs = {"onnx": (export_onnx, ".onnx", ("onnx",)),
                               "openvino": (export_openvino, ".xml", ("openvino", "onnx"))}[args.format]
    check_opset(opset)  # every refusal before any download
    for module in needs:
        require(module, f"--format {args.format}")
    output = Path(args.output)
    check_writable(output)
    for segmentor, dataset in selected_entries(args):
        entry = get_entry(segmentor, dataset)
        progress = not args.quiet
        if args.weights is None:
            source = download_entry(entry, cache_dir=args.cache_dir, progress=progress)
        elif is_url(args.weights):
            source = download_url(args.weights, cache_dir=args.cache_dir, progress=progress, entry=entry)
        else:
            source = verify(args.weights)
        model = load(segmentor, dataset, weights=source.path, device="cpu")
        print(exporter(model, output / (Path(entry.filename).stem + suffix), opset=opset, source_sha256=source.sha256))
    return ExitCode.OK


def register(add) -> None:
    """Add the commands; ``add(name, help)`` returns a new sub-parser."""
    p = add("list", "Show the twelve catalogue entries: classes, reported mIoU, file size, whether cached.")
    p.add_argument("--urls", action="store_true",
                   help="instead, the file name and download URL of each checkpoint (to fetch them on another "
                        "machine for one without network)")
    add_cache_dir(p)
    p.set_defaults(handler=_cmd_list)

    p = add("download", "Download, verify and cache checkpoints; print their local paths.")
    add_entry_choice(p)
    p.add_argument("--sha256", help="expected sha256 of the file, checked in addition to the catalogue's pin")
    p.add_argument("--force", action="store_true", help="download again even when a verified copy is cached")
    add_cache_dir(p)
    add_quiet(p)
    p.set_defaults(handler=_cmd_download)

    p = add("verify", "Print the sha256 digest and size of checkpoint files (to pin them in the catalogue).")
    p.add_argument("files", nargs="+", metavar="FILE", help="checkpoint files (.pth or .safetensors)")
    p.add_argument("--sha256", help="exit with 3 unless every FILE has this digest")
    p.set_defaults(handler=_cmd_verify)

    p = add("export", "Write model-only safetensors files (float32/16), ready to publish on a model hub; or, with "
                      "--format onnx / openvino, the network as an ONNX file / OpenVINO IR for deployment.")
    add_entry_choice(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--output", help="folder to write into (created if missing)")
    target.add_argument("--hub-folder", metavar="DIR",
                        help="instead, each checkpoint as a saved-model folder DIR/NAME for the Hugging Face Hub: "
                             "float32 model.safetensors, config.json, and a README.md model card (published mIoU, "
                             "schedule, class table, links to the release); resnest_zoo.from_pretrained loads it")
    p.add_argument("--format", choices=["safetensors", "onnx", "openvino"], default="safetensors",
                   help="safetensors: the checkpoint's model tensors (default); onnx: NAME.onnx; openvino: NAME.xml + "
                        "NAME.bin -- logits at the input size, batch/height/width dynamic, classes, palette, "
                        "mean/std, resize rule and the checkpoint's sha256 in the metadata (needs "
                        "pip install \"resnest-zoo[onnx]\" or \"resnest-zoo[openvino]\")")
    p.add_argument("--opset", type=int, help="ONNX opset for --format onnx/openvino (default 17; 11 to 20)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="dtype of the floating tensors written, for --format safetensors (default float32)")
    p.add_argument("--weights", help="a local checkpoint file or URL instead of the catalogue's")
    add_cache_dir(p)
    add_quiet(p)
    p.set_defaults(handler=_cmd_export)
