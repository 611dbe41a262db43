"""``resnest-zoo predict``: segment image files and folders into masks."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .common import CommandError, add_cache_dir, add_quiet, model_spec, opacity
from .exit_codes import ExitCode

__all__ = ["register", "iter_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}


def iter_images(inputs: Sequence[str]) -> list[tuple[Path, Path]]:
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

    from ..api import load
    from ..devices import default_device, native_half_precision

    images = iter_images(args.inputs)
    missing = [str(p) for p, _ in images if not p.exists()]
    if not images or len(missing) == len(images):
        raise CommandError(f"no input images found in {' '.join(args.inputs)}", ExitCode.USAGE)
    device = torch.device(args.device) if args.device else default_device()
    dtype = None
    if args.fp16:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        if not native_half_precision(device, dtype):
            raise CommandError(f"--fp16: this {device.type} has no native {str(dtype).replace('torch.', '')} arithmetic "
                        "(on CPUs it needs AVX512-BF16 or AMX), so half precision would be several times slower "
                        "than float32 here; drop --fp16", ExitCode.USAGE)
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
        return ExitCode.PARTIAL if done else ExitCode.USAGE
    return ExitCode.OK


def register(add) -> None:
    """Add the ``predict`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("predict", "Segment images: one indexed PNG mask (dataset palette) per input, optionally an overlay.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders (searched recursively)")
    p.add_argument("-m", "--model", required=True, type=model_spec, metavar="SEGMENTOR/DATASET",
                   help="e.g. deeplabv3plus/cityscapes")
    p.add_argument("--weights", metavar="PATH_OR_URL", help="checkpoint to use instead of the catalogue's")
    p.add_argument("-o", "--output", default="predictions", metavar="OUT_DIR", help="output folder (default: predictions)")
    p.add_argument("--overlay", action="store_true", help="also write IMAGE_overlay.png, the mask blended on the image")
    p.add_argument("--alpha", type=opacity, default=0.5, help="overlay opacity of the mask (default 0.5)")
    p.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")
    p.add_argument("--fp16", action="store_true", help="half precision: float16 on CUDA, bfloat16 on CPUs with AVX512-BF16/AMX (refused elsewhere)")
    add_cache_dir(p)
    add_quiet(p, "no progress bars or summary")
    p.set_defaults(handler=_cmd_predict)
