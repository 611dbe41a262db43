"""The ``resnest-zoo`` command: its parser, and how every failure becomes one line and an exit code.

Each command lives in its own module (:mod:`.checkpoints`, :mod:`.cache`, :mod:`.predict`) and adds its
sub-parser through ``register``; the exit codes are those of :mod:`.exit_codes`.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotAvailableError,
    ConfigurationError,
    IntegrityError,
    ResNeStZooError,
    UnknownModelError,
    UnsafeCheckpointError,
)
from . import cache, checkpoints, predict
from .common import CommandError
from .exit_codes import ExitCode, exit_codes_help

__all__ = ["build_parser", "main"]

# which exit code each kind of error ends the process with; the first matching class wins
_ERROR_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (UnknownModelError, ExitCode.USAGE),
    (ConfigurationError, ExitCode.USAGE),
    (CheckpointNotAvailableError, ExitCode.UNAVAILABLE),
    (IntegrityError, ExitCode.UNAVAILABLE),
    (UnsafeCheckpointError, ExitCode.UNUSABLE),
    (CheckpointFormatError, ExitCode.UNUSABLE),
    (CheckpointMismatchError, ExitCode.UNUSABLE),
    (FileNotFoundError, ExitCode.USAGE),
    (ResNeStZooError, ExitCode.PARTIAL),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    epilog = exit_codes_help()
    parser = argparse.ArgumentParser(
        prog="resnest-zoo",
        description="ResNeSt-101 segmentation models (FCN, PSPNet, DeepLabV3, DeepLabV3+ on VOC, ADE20K, Cityscapes).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    for module in (checkpoints, predict, cache):
        module.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resnest-zoo`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        for kind, code in _ERROR_CODES:
            if isinstance(exc, kind):
                print(f"error: {exc}", file=sys.stderr)
                return int(code)
        raise
