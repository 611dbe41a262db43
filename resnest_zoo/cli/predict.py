"""``resnest-zoo predict``: segment image files and folders into masks, without ever losing a file.

What keeps the user's files safe (README "Command line"); each refusal comes before the model is loaded,
as one line and exit code 2:

* the output folder is never searched for inputs, so ``resnest-zoo predict .`` run twice does not segment its
  own ``predictions/`` (an output folder equal to the only input folder therefore leaves no input, and says why);
* an input is never written: a run whose mask or overlay would land on one of its inputs is refused;
* a mask or overlay replaces an existing file only when this command wrote that file, which it recognises by
  the PNG text chunk :data:`MARK` it puts in every file it writes, or when ``--overwrite`` is given;
* the output folder must be writable (or creatable).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .common import CommandError, add_cache_dir, add_quiet, model_spec, opacity
from .exit_codes import ExitCode

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["register", "iter_images", "written_by_predict", "IMAGE_SUFFIXES", "MARK"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}

MARK = "resnest-zoo"
"""Keyword of the PNG text chunk in every mask and overlay this command writes; its value says which model
made it. A later run replaces a file without ``--overwrite`` only when it carries this chunk."""

_MASK, _OVERLAY = ".png", "_overlay.png"  # appended to the output name of each image


def _inside(path: Path, folder: Path) -> bool:
    """Whether resolved ``path`` is ``folder`` or below it."""
    return path == folder or folder in path.parents


def iter_images(inputs: Sequence[str], *, skip: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(image path, output path without suffix, relative to the output folder) for files and the images
    inside folders (recursively, keeping the sub-folders). Two inputs that would share an output name
    (``a.jpg`` and ``a.png``) keep their suffix in it (``a.jpg.png``, ``a.png.png``).

    Folder searches leave out everything inside ``skip`` (the output folder: masks are not inputs); files
    named explicitly are kept.
    """
    skipped = Path(skip).resolve() if skip is not None else None
    found: list[tuple[Path, Path]] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not (skipped is not None and _inside(p.resolve(), skipped)))
            found += [(image, image.relative_to(path)) for image in images]
        else:
            found.append((path, Path(path.name)))
    seen: set[Path] = set()
    found = [(p, r) for p, r in found if not (p.resolve() in seen or seen.add(p.resolve()))]  # each file once
    stems = [relative.with_name(relative.stem) for _, relative in found]
    return [(path, stem if stems.count(stem) == 1 else relative)
            for (path, relative), stem in zip(found, stems)]


def written_by_predict(path: Path) -> bool:
    """Whether ``path`` is a PNG file this command wrote: it carries the :data:`MARK` text chunk."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and MARK in image.info
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # not a readable image: not ours
        return False


def _save(picture: Image.Image, path: Path, made_by: str) -> None:
    """Write ``picture`` as a PNG carrying the :data:`MARK` chunk (``made_by``: what it is and which model)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(MARK, made_by)
    picture.save(path, format="PNG", pnginfo=info)


def _check_writable(output: Path) -> None:
    """Refuse an output folder that cannot be created or written, before anything is loaded."""
    existing = output
    while not existing.exists() and existing != existing.parent:  # the folder, or the first one to create it in
        existing = existing.parent
    if not existing.is_dir():
        raise CommandError(f"cannot write masks into {output}: {existing} is a file, not a folder; choose another "
                           f"output folder with -o", ExitCode.USAGE)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise CommandError(f"cannot write masks into {output}: {existing} is not writable ({exc.strerror or exc}); "
                           f"choose another output folder with -o", ExitCode.USAGE) from None


def _plan(images: list[tuple[Path, Path]], output: Path, overlay: bool, overwrite: bool) -> list[list[Path]]:
    """The files each image will be written to (mask, then overlay); refuses, before any work, a run that would
    write over an input, write one file for two inputs, or replace a file it did not write (without --overwrite)."""
    inputs = {path.resolve(): path for path, _ in images}
    planned: dict[Path, Path] = {}
    foreign: list[Path] = []
    outputs = []
    for path, stem in images:
        target = output / stem
        files = [target.with_name(target.name + suffix) for suffix in ((_MASK, _OVERLAY) if overlay else (_MASK,))]
        for file in files:
            resolved = file.resolve()
            if resolved in inputs:
                raise CommandError(f"{file} would be written over the input image {inputs[resolved]}: inputs are "
                                   f"never written; choose an output folder (-o) that holds no input", ExitCode.USAGE)
            if resolved in planned:
                raise CommandError(f"{planned[resolved]} and {path} would both be written to {file}: rename one of "
                                   f"them, or segment them in separate runs", ExitCode.USAGE)
            planned[resolved] = path
            if not overwrite and (file.exists() or file.is_symlink()) and not written_by_predict(file):
                foreign.append(file)
        outputs.append(files)
    if foreign:
        shown = ", ".join(map(str, foreign[:3])) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise CommandError(f"{len(foreign)} output file(s) already exist and were not written by resnest-zoo "
                           f"predict: {shown}; pass --overwrite to replace them, or choose another output folder "
                           f"(-o)", ExitCode.USAGE)
    return outputs


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


def _cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..api import load
    from ..devices import resolve_device

    output = Path(args.output)
    images = iter_images(args.inputs, skip=output)
    missing = [str(p) for p, _ in images if not p.exists()]
    if not images or len(missing) == len(images):
        holds_output = any(_inside(output.resolve(), Path(name).resolve()) for name in args.inputs if Path(name).is_dir())
        why = (f" (the output folder {output} is never searched for inputs; give an output folder outside the "
               f"input folders with -o)" if holds_output else "")
        raise CommandError(f"no input images found in {' '.join(args.inputs)}{why}", ExitCode.USAGE)
    _check_writable(output)
    outputs = _plan(images, output, args.overlay, args.overwrite)
    device = resolve_device(args.device)
    dtype = _half_precision(device) if args.fp16 else None
    segmentor, dataset = args.model
    # inference only: BatchNorm folded into the convolutions (same predictions, faster)
    model = load(segmentor, dataset, weights=args.weights, device=device, cache_dir=args.cache_dir,
                 progress=not args.quiet, optimize=True)
    failures = 0
    bar = tqdm(list(zip(images, outputs)), unit="image", disable=args.quiet or len(images) < 2)
    for (path, _), files in bar:
        bar.set_postfix_str(path.name, refresh=False)
        try:
            prediction = model.predict(path, dtype=dtype)
            files[0].parent.mkdir(parents=True, exist_ok=True)
            _save(prediction.to_pil(), files[0], f"mask by {segmentor}/{dataset}")
            if args.overlay:
                _save(prediction.overlay(alpha=args.alpha), files[1], f"overlay by {segmentor}/{dataset}")
        except (OSError, ValueError, TypeError) as exc:
            failures += 1
            tqdm.write(f"error: {path}: {exc}".splitlines()[0], file=sys.stderr)
    done = len(images) - failures
    if not args.quiet:
        print(f"{done} of {len(images)} image(s) segmented into {output}", file=sys.stderr)
    if failures:
        return ExitCode.PARTIAL if done else ExitCode.USAGE
    return ExitCode.OK


def register(add) -> None:
    """Add the ``predict`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("predict", "Segment images: one indexed PNG mask (dataset palette) per input, optionally an overlay. "
                       "Inputs are never written, the output folder is never read as input, and a file this "
                       "command did not write is never replaced without --overwrite.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders (searched recursively)")
    p.add_argument("-m", "--model", required=True, type=model_spec, metavar="SEGMENTOR/DATASET",
                   help="e.g. deeplabv3plus/cityscapes")
    p.add_argument("--weights", metavar="PATH_OR_URL", help="checkpoint to use instead of the catalogue's")
    p.add_argument("-o", "--output", default="predictions", metavar="OUT_DIR", help="output folder (default: predictions)")
    p.add_argument("--overlay", action="store_true", help="also write IMAGE_overlay.png, the mask blended on the image")
    p.add_argument("--alpha", type=opacity, default=0.5, help="overlay opacity of the mask (default 0.5)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing files in OUT_DIR that resnest-zoo predict did not write (its own masks "
                        "and overlays are always replaced; inputs are never written)")
    p.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")
    p.add_argument("--fp16", action="store_true",
                   help="half precision: float16 on CUDA; on a CPU bfloat16 (AVX512-BF16/AMX), or float16 where only "
                        "that is native (AVX512-FP16); refused where neither is, since emulation is many times slower")
    add_cache_dir(p)
    add_quiet(p, "no progress bars or summary")
    p.set_defaults(handler=_cmd_predict)
