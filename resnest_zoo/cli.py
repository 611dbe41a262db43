"""The ``resnest-zoo`` command line: list, download, verify, export, predict and manage the cache.

Exit codes (also in ``resnest-zoo --help``):

    0  success
    1  some inputs failed (predict went on with the others), or an unexpected error
    2  bad usage or bad input: unknown model name, missing or unreadable image, bad option
    3  the checkpoint could not be obtained or failed verification (network, offline, digest)
    4  the checkpoint is unusable: unsafe pickle, unreadable file, or weights that do not fit the model
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import __version__
from .catalogue import DATASET_KEYS, SEGMENTORS, catalogue, get_entry
from .errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotAvailableError,
    IntegrityError,
    ResNeStZooError,
    UnknownModelError,
    UnsafeCheckpointError,
)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_UNUSABLE = 0, 1, 2, 3, 4
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}

_EXIT_CODES_HELP = """exit codes:
  0  success
  1  some inputs failed (predict carried on with the others), or an unexpected error
  2  bad usage or bad input (unknown model name, missing/unreadable image, bad option)
  3  checkpoint could not be obtained or failed verification (network, offline, sha256)
  4  checkpoint unusable (unsafe pickle, unreadable file, weights that do not fit the model)
"""


class _Fail(Exception):
    """A one-line failure with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _model_spec(text: str) -> tuple[str, str]:
    """``SEGMENTOR/DATASET`` -> canonical names (argparse type)."""
    if "/" not in text:
        raise argparse.ArgumentTypeError(f"expected SEGMENTOR/DATASET such as deeplabv3plus/cityscapes, got {text!r}")
    segmentor, dataset = text.split("/", 1)
    try:
        entry = get_entry(segmentor, dataset)
    except UnknownModelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return entry.segmentor, entry.dataset


def _opacity(text: str) -> float:
    """A number in [0, 1] (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


# ----------------------------------------------------------------------------------------------- commands

def _cmd_list(args: argparse.Namespace) -> int:
    from .cache import cached_files

    cached = {(r.entry.segmentor, r.entry.dataset) for r in cached_files(args.cache_dir) if r.entry is not None}
    rows = [
        [e.segmentor, e.dataset, str(e.num_classes), f"{e.miou:.2f}", _human_size(e.size),
         "yes" if e.key in cached else "no", e.hub_name]
        for e in catalogue().values()
    ]
    _print_table(rows, ["segmentor", "dataset", "classes", "mIoU %", "size", "cached", "torch.hub name"])
    if any(e.size is None for e in catalogue().values()):
        print("\nsize '-': not pinned in the catalogue yet (`resnest-zoo verify FILE` prints it from the real file)")
    return EXIT_OK


def _selected(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.all:
        if args.segmentor or args.dataset:
            raise _Fail("give either SEGMENTOR DATASET or --all, not both", EXIT_USAGE)
        return [entry.key for entry in catalogue().values()]
    if not (args.segmentor and args.dataset):
        raise _Fail("give SEGMENTOR DATASET (e.g. deeplabv3plus cityscapes) or --all", EXIT_USAGE)
    entry = get_entry(args.segmentor, args.dataset)
    return [entry.key]


def _cmd_download(args: argparse.Namespace) -> int:
    from .sources import download

    for segmentor, dataset in _selected(args):
        path = download(segmentor, dataset, cache_dir=args.cache_dir, progress=not args.quiet, sha256=args.sha256,
                        force=args.force)
        print(path)
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from .integrity import verify

    status = EXIT_OK
    for name in args.files:
        if not Path(name).is_file():
            raise _Fail(f"{name}: no such file", EXIT_USAGE)
        digest = verify(name)
        print(f"{digest.sha256}  {digest.size}  {digest.path}")
        if args.sha256 and digest.sha256 != args.sha256.lower():
            print(f"error: {name}: sha256 is {digest.sha256}, expected {args.sha256.lower()}", file=sys.stderr)
            status = EXIT_UNAVAILABLE
    return status


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .sources import export

    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    if args.weights and args.all:
        raise _Fail("--weights names one file: use it with SEGMENTOR DATASET, not --all", EXIT_USAGE)
    for segmentor, dataset in _selected(args):
        path = export(segmentor, dataset, args.output, dtype=dtype, weights=args.weights,
                      cache_dir=args.cache_dir, progress=not args.quiet)
        print(path)
    return EXIT_OK


def _cmd_cache(args: argparse.Namespace) -> int:
    from .cache import cached_files, clear_cache

    if args.action == "list":
        records = cached_files(args.cache_dir)
        rows = [[r.kind, r.entry.name if r.entry else "-", _human_size(r.size), str(r.path)] for r in records]
        if rows:
            _print_table(rows, ["kind", "entry", "size", "path"])
        else:
            print("the cache holds no resnest_zoo files")
        return EXIT_OK
    if bool(args.segmentor) != bool(args.dataset):
        raise _Fail("cache clear takes both SEGMENTOR and DATASET, or neither (everything)", EXIT_USAGE)
    if not args.yes:
        raise _Fail("cache clear deletes files: add --yes to confirm", EXIT_USAGE)
    removed = clear_cache(args.cache_dir, segmentor=args.segmentor, dataset=args.dataset)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} file(s) removed")
    return EXIT_OK


def _iter_images(inputs: Sequence[str]) -> list[tuple[Path, Path]]:
    """(image path, output path without suffix, relative to the output folder) for files and the images
    inside folders (recursively, keeping the sub-folders). Two inputs that would share an output name
    (``a.jpg`` and ``a.png``) keep their suffix in it (``a.jpg.png``, ``a.png.png``)."""
    found: list[tuple[Path, Path]] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(image, image.relative_to(path)) for image in images]
        else:
            found.append((path, Path(path.name)))
    seen: set[Path] = set()
    found = [(p, r) for p, r in found if not (p.resolve() in seen or seen.add(p.resolve()))]  # each file once
    stems = [relative.with_name(relative.stem) for _, relative in found]
    return [(path, stem if stems.count(stem) == 1 else relative)
            for (path, relative), stem in zip(found, stems)]


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .api import default_device, load
    from .optimize import native_half_precision

    images = _iter_images(args.inputs)
    missing = [str(p) for p, _ in images if not p.exists()]
    if not images or len(missing) == len(images):
        raise _Fail(f"no input images found in {' '.join(args.inputs)}", EXIT_USAGE)
    device = torch.device(args.device) if args.device else default_device()
    dtype = None
    if args.fp16:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        if not native_half_precision(device, dtype):
            raise _Fail(f"--fp16: this {device.type} has no native {str(dtype).replace('torch.', '')} arithmetic "
                        "(on CPUs it needs AVX512-BF16 or AMX), so half precision would be several times slower "
                        "than float32 here; drop --fp16", EXIT_USAGE)
    segmentor, dataset = args.model
    # inference only: BatchNorm folded into the convolutions (same predictions, faster)
    model = load(segmentor, dataset, weights=args.weights, device=device, cache_dir=args.cache_dir,
                 progress=not args.quiet, optimize=True)
    output = Path(args.output)
    failures = 0
    bar = tqdm(images, unit="image", disable=args.quiet or len(images) < 2)
    for path, stem in bar:
        bar.set_postfix_str(path.name, refresh=False)
        try:
            prediction = model.predict(path, dtype=dtype)
        except (OSError, ValueError, TypeError) as exc:
            failures += 1
            tqdm.write(f"error: {path}: {exc}".splitlines()[0], file=sys.stderr)
            continue
        target = output / stem
        target.parent.mkdir(parents=True, exist_ok=True)
        prediction.save(target.with_name(target.name + ".png"))
        if args.overlay:
            prediction.overlay(alpha=args.alpha).save(target.with_name(target.name + "_overlay.png"))
    done = len(images) - failures
    if not args.quiet:
        print(f"{done} of {len(images)} image(s) segmented into {output}", file=sys.stderr)
    if failures:
        return EXIT_PARTIAL if done else EXIT_USAGE
    return EXIT_OK


# ------------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="resnest-zoo",
        description="ResNeSt-101 segmentation models (FCN, PSPNet, DeepLabV3, DeepLabV3+ on VOC, ADE20K, Cityscapes).",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    formatter = argparse.RawDescriptionHelpFormatter

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=_EXIT_CODES_HELP,
                                  formatter_class=formatter)
        return sub

    cache_help = "cache folder (default: $RESNEST_ZOO_CACHE, else torch.hub's checkpoints folder)"

    p = add("list", "Show the twelve catalogue entries: classes, reported mIoU, file size, whether cached.")
    p.add_argument("--cache-dir", help=cache_help)
    p.set_defaults(handler=_cmd_list)

    model_names = f"segmentor: {', '.join(SEGMENTORS)}; dataset: {', '.join(DATASET_KEYS)} (case-insensitive, aliases accepted)"
    def add_entry_choice(p: argparse.ArgumentParser) -> None:
        p.add_argument("segmentor", nargs="?", help=model_names)
        p.add_argument("dataset", nargs="?", help="dataset of the checkpoint")
        p.add_argument("--all", action="store_true", help="all twelve checkpoints")

    def add_cache_and_quiet(p: argparse.ArgumentParser, quiet_help: str = "no progress bar") -> None:
        p.add_argument("--cache-dir", help=cache_help)
        p.add_argument("-q", "--quiet", action="store_true", help=quiet_help)

    p = add("download", "Download, verify and cache checkpoints; print their local paths.")
    add_entry_choice(p)
    p.add_argument("--sha256", help="expected sha256 of the file, checked in addition to the catalogue's pin")
    p.add_argument("--force", action="store_true", help="download again even when a verified copy is cached")
    add_cache_and_quiet(p)
    p.set_defaults(handler=_cmd_download)

    p = add("verify", "Print the sha256 digest and size of checkpoint files (to pin them in the catalogue).")
    p.add_argument("files", nargs="+", metavar="FILE", help="checkpoint files (.pth or .safetensors)")
    p.add_argument("--sha256", help="exit with 3 unless every FILE has this digest")
    p.set_defaults(handler=_cmd_verify)

    p = add("export", "Write model-only safetensors files (float32/16), ready to publish on a model hub.")
    add_entry_choice(p)
    p.add_argument("-o", "--output", required=True, help="folder to write into (created if missing)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="dtype of the floating tensors written (default float32)")
    p.add_argument("--weights", help="a local checkpoint file or URL instead of the catalogue's")
    add_cache_and_quiet(p)
    p.set_defaults(handler=_cmd_export)

    p = add("predict", "Segment images: one indexed PNG mask (dataset palette) per input, optionally an overlay.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders (searched recursively)")
    p.add_argument("-m", "--model", required=True, type=_model_spec, metavar="SEGMENTOR/DATASET",
                   help="e.g. deeplabv3plus/cityscapes")
    p.add_argument("--weights", metavar="PATH_OR_URL", help="checkpoint to use instead of the catalogue's")
    p.add_argument("-o", "--output", default="predictions", metavar="OUT_DIR", help="output folder (default: predictions)")
    p.add_argument("--overlay", action="store_true", help="also write IMAGE_overlay.png, the mask blended on the image")
    p.add_argument("--alpha", type=_opacity, default=0.5, help="overlay opacity of the mask (default 0.5)")
    p.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")
    p.add_argument("--fp16", action="store_true", help="half precision: float16 on CUDA, bfloat16 on CPUs with AVX512-BF16/AMX (refused elsewhere)")
    add_cache_and_quiet(p, "no progress bars or summary")
    p.set_defaults(handler=_cmd_predict)

    p = add("cache", "List or delete cached checkpoints.")
    p.add_argument("action", choices=["list", "clear"], help="list: show cached files; clear: delete them")
    p.add_argument("segmentor", nargs="?", help="with DATASET: clear only this entry's files")
    p.add_argument("dataset", nargs="?", help="with SEGMENTOR: clear only this entry's files")
    p.add_argument("--yes", action="store_true", help="confirm deletion for clear")
    p.add_argument("--cache-dir", help=cache_help)
    p.set_defaults(handler=_cmd_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resnest-zoo`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except _Fail as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except UnknownModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CheckpointNotAvailableError, IntegrityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (UnsafeCheckpointError, CheckpointFormatError, CheckpointMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ResNeStZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
