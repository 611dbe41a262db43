"""What every ``resnest-zoo`` command shares: the one-line failure, argument types, tables and common options."""
from __future__ import annotations

import argparse

from ..catalogue import DATASET_KEYS, SEGMENTORS, get_entry
from ..errors import UnknownModelError
from .exit_codes import ExitCode

__all__ = [
    "CommandError",
    "model_spec",
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


def model_spec(text: str) -> tuple[str, str]:
    """``SEGMENTOR/DATASET`` -> canonical names (argparse type)."""
    if "/" not in text:
        raise argparse.ArgumentTypeError(f"expected SEGMENTOR/DATASET such as deeplabv3plus/cityscapes, got {text!r}")
    segmentor, dataset = text.split("/", 1)
    try:
        entry = get_entry(segmentor, dataset)
    except UnknownModelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return entry.segmentor, entry.dataset


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
