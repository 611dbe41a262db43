"""The exit codes of the ``resnest-zoo`` command: the one table that ``--help``, the docs and the tests read."""
from __future__ import annotations

import textwrap
from enum import IntEnum

__all__ = ["ExitCode", "MEANINGS", "exit_codes_help"]


class ExitCode(IntEnum):
    """What the ``resnest-zoo`` process returns; :data:`MEANINGS` says when."""

    OK = 0
    PARTIAL = 1
    USAGE = 2
    UNAVAILABLE = 3
    UNUSABLE = 4
    ACCURACY = 5
    INTERRUPTED = 130
    BROKEN_PIPE = 141


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.PARTIAL: "some inputs failed (the others were processed), or an unexpected error",
    ExitCode.USAGE: ("bad usage or input: unknown model, no readable image, bad option or environment variable, "
                     "no such device, an output folder that cannot be written or would replace inputs or files "
                     "predict did not write, a runtime (ONNX Runtime, OpenVINO) that is not installed"),
    ExitCode.UNAVAILABLE: "the checkpoint could not be obtained or failed verification (network, offline, sha256, unwritable cache)",
    ExitCode.UNUSABLE: ("the checkpoint is unusable (unsafe pickle, not a checkpoint, weights that do not fit), or "
                        "the runtime file is (not written by resnest-zoo, or of another model)"),
    ExitCode.ACCURACY: ("INT8 quantization could not keep the mIoU drop within --max-miou-drop (the drop reached is "
                        "printed); nothing was written"),
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.BROKEN_PIPE: ("the program reading the output stopped early (resnest-zoo list piped into head -3): "
                           "stopped quietly, as Unix tools do"),
}


def exit_codes_help() -> str:
    """The ``exit codes:`` block printed at the end of every ``--help``."""
    return "exit codes:\n" + "".join(
        textwrap.fill(MEANINGS[code], width=100, initial_indent=f"  {int(code):>3}  ", subsequent_indent=" " * 7) + "\n"
        for code in ExitCode)
