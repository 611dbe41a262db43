"""Where batch prediction writes, in what format, and the rules that keep every file safe (torch-free).

* Names: an input named ``sub/a`` (see :mod:`.inputs`) gets ``OUT/sub/a.png`` (or ``a.npy``) and, with an
  overlay, ``OUT/sub/a_overlay.png`` (:func:`output_paths`).
* Formats (:data:`resnest_zoo.options.MASK_FORMATS`): ``png``, an indexed PNG whose pixel values are the class ids and whose palette
  is the dataset's; ``cityscapes-ids``, the official Cityscapes label ids as the reference's ``formatresults``
  writes them for the evaluation server (same pixels, palette and names); ``npy``, the class ids as a NumPy array.
* Every PNG written carries the text chunk :data:`MARK` (``mask by fcn/voc``), which is how a later run knows a
  file is its own (:func:`written_by_predict`).
* :func:`plan_outputs` decides, before any work, what each input will write and whether it is already done: it
  refuses a run that would write over one of its inputs, write one file for two inputs, or replace a file it did
  not write (unless ``overwrite``); an input whose outputs all exist (and are its own) is done and skipped, so a
  rerun resumes. ``.npy`` files carry no mark: an existing one counts as done.
* Every file is written under a temporary name in its folder and renamed into place
  (:func:`resnest_zoo.files.atomic_write`), so no half-written file ever has a final name.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import OutputConflictError, OutputWriteError
from ..files import atomic_write, check_output
from ..options import MASK_FORMATS
from .inputs import InputFile

if TYPE_CHECKING:
    from .prediction import Prediction

__all__ = ["MARK", "PlannedInput", "output_paths", "written_by_predict", "plan_outputs", "check_output_folder",
           "write_outputs"]

MARK = "resnest-zoo"
"""Keyword of the PNG text chunk in every mask and overlay batch prediction writes; its value says what the file
is and which model made it (``mask by fcn/voc``)."""


@dataclass(frozen=True)
class PlannedInput:
    """An input, the files it writes (the mask first, then the overlay), and whether they all exist already."""

    input: InputFile
    outputs: tuple[Path, ...]
    done: bool


def output_paths(output: Path, name: Any, fmt: str, overlay: bool) -> list[Path]:
    """An input's output files: the mask (``NAME.png``, or ``NAME.npy``), then ``NAME_overlay.png`` if asked.

    For ``cityscapes-ids`` the mask keeps the image's name as the evaluation server expects it: a Cityscapes
    picture ``..._leftImg8bit.png`` gives ``..._leftImg8bit.png``, as the reference's ``formatresults`` names it.
    """
    base = output / str(name)
    main = base.with_name(base.name + (".npy" if fmt == "npy" else ".png"))
    return [main, base.with_name(base.name + "_overlay.png")] if overlay else [main]


def written_by_predict(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a PNG file batch prediction wrote: it carries the :data:`MARK` text chunk."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and MARK in image.info
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # not a readable image: not ours
        return False


def _ours(path: Path) -> bool:
    return path.suffix == ".npy" or written_by_predict(path)


def check_output_folder(output: Path) -> None:
    """:class:`OutputWriteError` unless ``output`` exists or can be created, and takes a new file; nothing is left
    behind (the folder is not created here)."""
    check_output(output, folder=True, what="masks", hint="choose another output folder with -o")


def plan_outputs(work: Sequence[InputFile], output: Path, fmt: str, overlay: bool, overwrite: bool, *,
                 inputs: Sequence[InputFile] | None = None) -> list[PlannedInput]:
    """What each input of ``work`` writes and whether it is done (see the module docs); refusals raise
    :class:`OutputConflictError` before any work. ``inputs`` is the whole run's work list (default ``work``):
    no output may land on any of them."""
    if fmt not in MASK_FORMATS:
        raise ValueError(f"format must be one of {', '.join(MASK_FORMATS)}, got {fmt!r}")
    root = output.resolve()
    protected = {item.path.resolve(): item.path for item in (work if inputs is None else inputs)}
    planned: dict[Path, Path] = {}
    foreign: list[Path] = []
    result = []
    for item in work:
        files = output_paths(output, item.name, fmt, overlay)
        for file in files:
            resolved = file.resolve()
            if not resolved.is_relative_to(root):  # a link inside the output folder that leads out of it
                raise OutputConflictError(f"{file} would be written outside the output folder {output} (it leads to "
                                          f"{resolved} through a symbolic link): outputs never leave -o; remove the "
                                          f"link or choose another output folder")
            if resolved in protected:
                raise OutputConflictError(f"{file} would be written over the input image {protected[resolved]}: "
                                          f"inputs are never written; choose an output folder (-o) that holds no input")
            if resolved in planned:
                raise OutputConflictError(f"{planned[resolved]} and {item.path} would both be written to {file}: "
                                          f"rename one of them, or segment them in separate runs")
            planned[resolved] = item.path
        present = [file.exists() or file.is_symlink() for file in files]
        if not overwrite:
            foreign += [file for file, here in zip(files, present) if here and not _ours(file)]
        result.append(PlannedInput(item, tuple(files), not overwrite and all(present)))
    if foreign:
        shown = ", ".join(map(str, foreign[:3])) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputConflictError(f"{len(foreign)} output file(s) already exist and were not written by resnest-zoo "
                                  f"predict: {shown}; pass --overwrite to replace them, or choose another output "
                                  f"folder (-o)")
    return result


def _png(image, made_by: str) -> Callable[[IO[bytes]], None]:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(MARK, made_by)
    return lambda handle: image.save(handle, format="PNG", pnginfo=info)


def _cityscapes_ids(labels):
    """Train ids -> the label-id image of the reference's ``formatresults`` (same pixels, palette and mode)."""
    import numpy as np
    from PIL import Image

    from ..datasets import cityscapes

    table = np.zeros(256, dtype=np.uint8)
    for train_id, label_id in cityscapes.TRAIN_ID_TO_LABEL_ID.items():
        table[train_id] = label_id
    image = Image.fromarray(table[labels]).convert("P")
    image.putpalette(bytes(np.asarray(cityscapes.LABEL_ID_PALETTE, dtype=np.uint8)))
    return image


def write_outputs(prediction: Prediction, outputs: Sequence[Path], fmt: str, alpha: float | None, model: str,
                  overwrite: bool) -> None:
    """Encode and write one prediction's files: the overlay (when ``alpha`` is given) first, the mask last, so that
    the mask's presence means the input is done; an existing file is kept unless ``overwrite``.
    :class:`OutputWriteError` names the file that could not be written."""
    import numpy as np

    if fmt == "npy":
        encoders = [lambda handle: np.save(handle, prediction.labels)]
    else:
        mask = _cityscapes_ids(prediction.labels) if fmt == "cityscapes-ids" else prediction.to_pil()
        encoders = [_png(mask, f"{'label ids' if fmt == 'cityscapes-ids' else 'mask'} by {model}")]
    if alpha is not None:
        encoders.append(_png(prediction.overlay(alpha), f"overlay by {model}"))
    for target, encode in reversed(list(zip(outputs, encoders))):
        if overwrite or not target.exists():
            try:
                with atomic_write(target, unique=False) as temporary, open(temporary, "wb") as handle:
                    encode(handle)
            except OSError as exc:
                raise OutputWriteError(f"cannot write {target}: {exc.strerror or exc}; the run stopped, and every "
                                       f"output written so far is complete and kept") from None
