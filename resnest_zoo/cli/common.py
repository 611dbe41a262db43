"""What every ``resnest-zoo`` command shares: the one-line failure, argument types, tables and common options."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalogue import DATASET_KEYS, SEGMENTORS, get_entry
from ..errors import UnknownModelError
from ..hub import HUB_PREFIX
from .exit_codes import ExitCode

__all__ = [
    "CommandError",
    "model_spec",
    "ModelChoice",
    "opacity",
    "human_size",
    "print_table",
    "add_cache_dir",
    "add_quiet",
    "add_entry_choice",
    "selected_entries",
]

CACHE_HELP = "cache folder (default: $RESNEST_ZOO_CACHE, else torch.hub's checkpoints folder)"
MODEL_NAMES_HELP = (f"segmentor: {', '.join(SEGMENTORS)}; dataset: {', '.join(DATASET_KEYS)} "
                    "(case-insensitive, aliases accepted)")


class CommandError(Exception):
    """A one-line failure of a command, with the exit code it ends the process with."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


MODEL_HELP = ("SEGMENTOR/DATASET (a catalogue checkpoint, e.g. deeplabv3plus/cityscapes), the folder of a saved model, "
              "or hf:ORG/NAME (a saved model on the Hugging Face Hub)")


@dataclass(frozen=True)
class ModelChoice:
    """What ``-m`` names: a catalogue entry (``segmentor``, ``dataset``), or a model saved with ``save_pretrained``
    (``saved``: its folder or ``hf:org/name``; ``dataset`` is then not known before it is loaded)."""

    segmentor: str | None = None
    dataset: str | None = None
    saved: str | None = None

    def __str__(self) -> str:
        return self.saved if self.saved is not None else f"{self.segmentor}/{self.dataset}"

    def load(self, *, weights: str | None = None, backend: str = "torch", runtime_file: str | None = None,
             progress: bool | None = None, cache_dir: str | None = None, **options: Any) -> Any:
        """The model: :func:`resnest_zoo.load` for a catalogue entry, :func:`resnest_zoo.from_pretrained` for a
        saved one (whose weights travel with it, through the Hugging Face cache)."""
        if self.saved is None:
            from ..api import load

            return load(self.segmentor, self.dataset, weights=weights, backend=backend, runtime_file=runtime_file,
                        progress=progress, cache_dir=cache_dir, **options)
        unusable = [name for name, given in (("--weights", weights), ("--backend", backend != "torch"),
                                             ("--runtime-file", runtime_file), ("--cache-dir", cache_dir)) if given]
        if unusable:
            raise CommandError(f"{', '.join(unusable)} apply to catalogue checkpoints (-m SEGMENTOR/DATASET), not to the "
                               f"saved model {self.saved}, which carries its weights", ExitCode.USAGE)
        from ..hub.pretrained import from_pretrained

        return from_pretrained(self.saved, **options)


def model_spec(text: str) -> ModelChoice:
    """``-m``'s argparse type: ``SEGMENTOR/DATASET`` (canonical names), an existing folder, or ``hf:org/name``."""
    if text.startswith(HUB_PREFIX) or Path(text).expanduser().is_dir():
        return ModelChoice(saved=text)
    if "/" not in text:
        raise argparse.ArgumentTypeError(f"expected {MODEL_HELP}; got {text!r}, which is none of these")
    segmentor, dataset = text.split("/", 1)
    try:
        entry = get_entry(segmentor, dataset)
    except UnknownModelError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or, for a saved model, no folder {text!r} exists)") from None
    return ModelChoice(entry.segmentor, entry.dataset)


def opacity(text: str) -> float:
    """A number in [0, 1] (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def human_size(size: int | None) -> str:
    """``1.5 MiB`` style; ``-`` for an unknown size."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def print_table(rows: list[list[str]], header: list[str]) -> None:
    """Left-aligned columns under a header and a rule."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", help=CACHE_HELP)


def add_quiet(parser: argparse.ArgumentParser, help_text: str = "no progress bar") -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help=help_text)


def add_entry_choice(parser: argparse.ArgumentParser) -> None:
    """``SEGMENTOR DATASET`` or ``--all``; read back with :func:`selected_entries`."""
    parser.add_argument("segmentor", nargs="?", help=MODEL_NAMES_HELP)
    parser.add_argument("dataset", nargs="?", help="dataset of the checkpoint")
    parser.add_argument("--all", action="store_true", help="all twelve checkpoints")


def selected_entries(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (segmentor, dataset) keys chosen with :func:`add_entry_choice`."""
    from ..catalogue import catalogue

    if args.all:
        if args.segmentor or args.dataset:
            raise CommandError("give either SEGMENTOR DATASET or --all, not both", ExitCode.USAGE)
        return [entry.key for entry in catalogue().values()]
    if not (args.segmentor and args.dataset):
        raise CommandError("give SEGMENTOR DATASET (e.g. deeplabv3plus cityscapes) or --all", ExitCode.USAGE)
    return [get_entry(args.segmentor, args.dataset).key]
