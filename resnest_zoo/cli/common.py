"""What every ``resnest-zoo`` command shares: the one-line failure, how a model is named, argument types, tables and
common options."""
from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

from ..catalogue import catalogue, get_entry
from ..errors import PretrainedNotFoundError, UnknownModelError
from ..naming import MODEL_NAME_HELP, ModelName, parse_model_name
from ..options import WORKERS_HELP
from .exit_codes import ExitCode

__all__ = [
    "CommandError",
    "model_name",
    "add_models",
    "selected_models",
    "saved_only",
    "opacity",
    "at_least",
    "human_size",
    "print_table",
    "add_cache_dir",
    "add_quiet",
    "add_workers",
    "deprecated",
]

CACHE_HELP = "cache folder (default: $RESNEST_ZOO_CACHE, else torch.hub's checkpoints folder)"


class CommandError(Exception):
    """A one-line failure of a command, with the exit code it ends the process with."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


def deprecated(message: str) -> None:
    """Say once, as one ``warning:`` line, that a spelling still works but goes away in the next release."""
    warnings.warn(f"{message}; it keeps working in this release only", FutureWarning, stacklevel=2)


def model_name(text: str) -> ModelName:
    """``-m``'s argparse type: a model name (:mod:`resnest_zoo.naming`), or the usage error saying why not."""
    try:
        return parse_model_name(text)
    except (UnknownModelError, PretrainedNotFoundError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_models(parser: argparse.ArgumentParser, *, several: bool, legacy: bool = False, extra: str = "") -> None:
    """``-m/--model MODEL`` (repeatable when ``several``, with ``--all`` for the whole catalogue); ``legacy`` also
    accepts the deprecated ``SEGMENTOR DATASET`` positionals of earlier releases (read by :func:`selected_models`)."""
    parser.add_argument("-m", "--model", dest="models", action="append", type=model_name, metavar="MODEL",
                        default=[], help=f"{MODEL_NAME_HELP}{'; repeat for several' if several else ''}{extra}")
    if several:
        parser.add_argument("--all", action="store_true", help="all twelve catalogue checkpoints")
    if legacy:
        parser.add_argument("segmentor", nargs="?", help=argparse.SUPPRESS)
        parser.add_argument("dataset", nargs="?", help=argparse.SUPPRESS)


def selected_models(args: argparse.Namespace, command: str) -> list[ModelName]:
    """The models a command was given: ``-m`` (each once), ``--all``, or the deprecated ``SEGMENTOR DATASET``."""
    models: list[ModelName] = list(dict.fromkeys(args.models))
    positional = [name for name in (getattr(args, "segmentor", None), getattr(args, "dataset", None)) if name]
    if positional:
        if models:
            raise CommandError(f"give -m MODEL or the old spelling SEGMENTOR DATASET ({' '.join(positional)}), not both",
                               ExitCode.USAGE)
        if len(positional) != 2:
            raise CommandError(f"give the model with -m MODEL ({MODEL_NAME_HELP})", ExitCode.USAGE)
        entry = get_entry(*positional)  # UnknownModelError: one line, exit 2
        deprecated(f"`resnest-zoo {command} {' '.join(positional)}` is the old spelling of "
                   f"`resnest-zoo {command} -m {entry.segmentor}/{entry.dataset}`")
        models.append(ModelName(entry.segmentor, entry.dataset))
    if getattr(args, "all", False):
        if models:
            raise CommandError("give either -m MODEL or --all, not both", ExitCode.USAGE)
        return [ModelName(entry.segmentor, entry.dataset) for entry in catalogue().values()]
    if not models:
        several = " (repeat -m for several, or --all)" if hasattr(args, "all") else ""
        raise CommandError(f"give the model with -m MODEL{several}: {MODEL_NAME_HELP}", ExitCode.USAGE)
    return models


def saved_only(name: ModelName, given: dict[str, object]) -> None:
    """Refuse the options of catalogue checkpoints that were ``given`` (flag -> value) for the saved model ``name``,
    which carries its weights."""
    unusable = [flag for flag, value in given.items() if value]
    if unusable:
        raise CommandError(f"{', '.join(unusable)} apply to catalogue checkpoints (-m SEGMENTOR/DATASET), not to the "
                           f"saved model {name}, which carries its weights", ExitCode.USAGE)


def opacity(text: str) -> float:
    """A number in [0, 1] (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def at_least(minimum: int) -> Callable[[str], int]:
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


def add_quiet(parser: argparse.ArgumentParser, help_text: str = "no progress display") -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help=help_text)


def add_workers(parser: argparse.ArgumentParser, what: str = "reading images") -> None:
    parser.add_argument("--workers", type=at_least(0), metavar="N",
                        help=f"processes {what} (default: {WORKERS_HELP}; 0: none)")


def loading_options(args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    """The options of :func:`resnest_zoo.load_model` that the command line gives the same way everywhere."""
    return {"weights": getattr(args, "weights", None), "cache_dir": getattr(args, "cache_dir", None), **options}
