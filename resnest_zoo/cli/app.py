"""The ``resnest-zoo`` command: its parser, and how every failure becomes one line and an exit code.

Each command lives in its own module (:mod:`.checkpoints`, :mod:`.cache`, :mod:`.predict`) and adds its
sub-parser through ``register``; the exit codes are those of :mod:`.exit_codes`. Warnings print as one line
(``warning: ...``, no source line), and a reader that goes away (``resnest-zoo list | head -3``) ends the
command quietly.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .._version import __version__
from ..errors import (
    AccuracyBoundError,
    CalibrationError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotAvailableError,
    ConfigFormatError,
    ConfigurationError,
    DatasetError,
    DeviceNotAvailableError,
    FolderReadError,
    ImageReadError,
    IntegrityError,
    InvalidClassesError,
    OptionalDependencyError,
    OutputConflictError,
    OutputWriteError,
    ResNeStZooError,
    RuntimeFileError,
    RuntimeModelMismatchError,
    UnknownModelError,
    UnsafeCheckpointError,
    UnsupportedOpsetError,
)
from . import cache, checkpoints, evaluate, predict, serve
from .common import CommandError
from .exit_codes import ExitCode, exit_codes_help

__all__ = ["build_parser", "main"]

# which exit code each kind of error ends the process with; the first matching class wins
_ERROR_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (UnknownModelError, ExitCode.USAGE),
    (ConfigurationError, ExitCode.USAGE),
    (DeviceNotAvailableError, ExitCode.USAGE),
    (CheckpointNotAvailableError, ExitCode.UNAVAILABLE),
    (IntegrityError, ExitCode.UNAVAILABLE),
    (UnsafeCheckpointError, ExitCode.UNUSABLE),
    (CheckpointFormatError, ExitCode.UNUSABLE),
    (CheckpointMismatchError, ExitCode.UNUSABLE),
    (ConfigFormatError, ExitCode.UNUSABLE),  # a saved model's config.json (foreign, newer, malformed)
    (InvalidClassesError, ExitCode.USAGE),
    (OptionalDependencyError, ExitCode.USAGE),
    (UnsupportedOpsetError, ExitCode.USAGE),
    (OutputWriteError, ExitCode.USAGE),
    (OutputConflictError, ExitCode.USAGE),
    (FolderReadError, ExitCode.USAGE),
    (DatasetError, ExitCode.USAGE),
    (ImageReadError, ExitCode.USAGE),
    (CalibrationError, ExitCode.USAGE),
    (AccuracyBoundError, ExitCode.ACCURACY),
    (RuntimeFileError, ExitCode.UNUSABLE),
    (RuntimeModelMismatchError, ExitCode.UNUSABLE),
    (FileNotFoundError, ExitCode.USAGE),
    (ResNeStZooError, ExitCode.PARTIAL),
    (ValueError, ExitCode.USAGE),  # an option or value the library refused, with its reason
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

    for module in (checkpoints, predict, evaluate, cache, serve):
        module.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resnest-zoo`` console script; returns the exit code."""
    try:
        with _one_line_warnings():
            try:
                return _run(argv)
            finally:
                sys.stdout.flush()  # a reader that went away shows here, inside main, not at interpreter exit
    except BrokenPipeError:
        if not _output_closed():
            raise
        _discard_output()  # as Unix tools do: no message, nothing more written
        return int(ExitCode.BROKEN_PIPE)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _quiet_warnings(getattr(args, "quiet", False)):
            return int(args.handler(args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        raise  # main() ends the command quietly
    except Exception as exc:
        for kind, code in _ERROR_CODES:
            if isinstance(exc, kind):
                print(f"error: {exc}", file=sys.stderr)
                return int(code)
        print(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug of resnest-zoo {__version__}: "
              f"please report it with the command that caused it", file=sys.stderr)
        return int(ExitCode.PARTIAL)


@contextmanager
def _quiet_warnings(quiet: bool) -> Iterator[None]:
    """Under ``-q``, the warnings that only inform are not printed: that a checkpoint is not pinned in the catalogue
    (checked against the digest of its first download), which every command using it would repeat."""
    with warnings.catch_warnings():
        if quiet:
            from ..weights.integrity import UnpinnedCheckpointWarning

            warnings.simplefilter("ignore", UnpinnedCheckpointWarning)
        yield


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              line: str | None = None) -> str:
    """``warnings.formatwarning`` for the command: ``warning: <message>`` on one line, no source file or line."""
    return f"warning: {' '.join(str(message).split())}\n"


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line
    try:
        yield
    finally:
        warnings.formatwarning = previous


def _output_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone away (rather than, say, a socket that broke)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # errors are always reported: POLLERR once the reader has closed
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() on this platform, or no file descriptor
        return True


def _discard_output() -> None:
    """Point standard output at the null device, so that the interpreter's last flush does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass
