"""Issue 19, sections 4 and 5: one line and the documented exit code where a traceback or a misleading message came
before, nothing printed under ``-q`` that only informs, and progress as plain lines when standard error is a log."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest
from PIL import Image

import resnest_zoo
from resnest_zoo.cli import checkpoints, main
from resnest_zoo.cli.exit_codes import ExitCode
from resnest_zoo.progress import LogLines, progress_bar

from synthetic_data import ColourSegmentor, write_cityscapes
from test_edges_outputs import cli
from test_stream import _picture


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Offline with an empty cache: nothing here may download (a download attempt would end with exit code 3)."""
    monkeypatch.setenv("RESNEST_ZOO_OFFLINE", "1")
    monkeypatch.setenv("RESNEST_ZOO_CACHE", str(tmp_path / "cache"))


def _usage_error(*args: str) -> str:
    """The message argparse prints when it refuses ``args`` (exit code 2 after the usage line, no traceback)."""
    error = io.StringIO()
    with contextlib.redirect_stderr(error), pytest.raises(SystemExit) as raised:
        main(list(args))
    assert raised.value.code == ExitCode.USAGE and "Traceback" not in error.getvalue()
    return error.getvalue().strip().splitlines()[-1]


def test_eval_scales_must_be_positive(tmp_path):
    for value in ("0", "-1", "nan"):
        message = _usage_error("eval", "-m", "fcn/voc", "--data", str(tmp_path), "--scales", "1", value)
        assert message.endswith(f"argument --scales: expected a positive number such as 0.75 or 1.25, got {value!r}")


def test_a_model_folder_that_does_not_exist_is_named_as_such():
    for command in (["predict", "photo.jpg", "-o", "out"], ["eval", "--data", "."], ["export", "-o", "out"]):
        message = _usage_error(*command, "-m", "./nofolder")
        assert "no folder './nofolder': a saved model is named by its folder, which must exist" in message
        assert "unknown segmentor" not in message


def test_predict_into_a_folder_holding_the_inputs_says_they_were_found_but_excluded(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    for index in range(2):
        Image.fromarray(_picture(40, 30, index)).save(tmp_path / "photos" / f"{index}.png")
    monkeypatch.chdir(tmp_path)
    code, output, error = cli("predict", "photos", "-m", "fcn/voc", "-o", ".")
    assert code == ExitCode.USAGE and output == "" and error.count("\n") == 1
    assert "the 2 image(s) found in photos are all inside the output folder" in error
    assert "output folder . is never searched for inputs" in error and "-o" in error


@pytest.mark.parametrize("arguments, refused", [
    (["verify", "-m", "fcn/voc"], "-m"),
    (["verify", "fcn", "voc"], "-m"),  # the old spelling of a model name, not silently ignored either
    (["list", "--fix"], "--fix"),
    (["list", "--yes"], "--yes"),
    (["clear", "--fix", "--yes"], "--fix"),
])
def test_cache_actions_refuse_the_options_they_do_not_take(tmp_path, arguments, refused):
    code, output, error = cli("cache", *arguments, "--cache-dir", str(tmp_path / "cache"))
    assert code == ExitCode.USAGE and output == "" and error.count("\n") == 1
    assert f"error: cache {arguments[0]} does not take {refused} (it takes " in error
    assert not (tmp_path / "cache").exists()  # nothing was done


def test_an_unexpected_error_is_one_line_and_exit_code_1(monkeypatch):
    def broken(args):
        raise KeyError("something nobody expected")

    monkeypatch.setattr(checkpoints, "_cmd_list", broken)  # read when the parser is built
    code, output, error = cli("list")
    assert code == ExitCode.PARTIAL and output == ""
    assert error.startswith("error: internal error (KeyError: 'something nobody expected'); this is a bug of "
                            "resnest-zoo") and error.count("\n") == 1


def test_quiet_leaves_out_the_unpinned_checkpoint_warning():
    """A stand-in ``download`` that raises the warning a checkpoint without a pin raises: one line without ``-q``,
    nothing with it (the other warnings still print)."""
    script = ("import sys, warnings\nfrom resnest_zoo.cli import app, checkpoints\n"
              "from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning\n"
              "def download(args):\n"
              "    warnings.warn('fcn.pth is not pinned in the catalogue', UnpinnedCheckpointWarning)\n"
              "    warnings.warn('another warning')\n"
              "    return 0\n"
              "checkpoints._cmd_download = download  # read when the parser is built\n"
              "sys.exit(app.main(['download', '-m', 'fcn/voc', *sys.argv[1:]]))\n")
    loud, quiet = (subprocess.run([sys.executable, "-c", script, *extra], capture_output=True, text=True, timeout=120)
                   for extra in ([], ["-q"]))
    assert loud.returncode == quiet.returncode == ExitCode.OK, (loud.stderr, quiet.stderr)
    assert loud.stderr == "warning: fcn.pth is not pinned in the catalogue\nwarning: another warning\n"
    assert quiet.stderr == "warning: another warning\n"


def test_progress_goes_to_a_log_as_lines_not_a_redrawn_bar(tmp_path, capfd, monkeypatch):
    for index in range(3):
        Image.fromarray(_picture(40, 30, index)).save(tmp_path / f"{index}.png")
    resnest_zoo.predict_to_folder(ColourSegmentor("voc"), tmp_path, tmp_path / "out", workers=0, progress=True)
    data = write_cityscapes(tmp_path / "data", count=2)
    resnest_zoo.evaluate(ColourSegmentor("cityscapes"), data, workers=0, progress=True)
    error = capfd.readouterr().err
    assert "\r" not in error and "\x1b[" not in error  # no carriage return, no cursor movement
    lines = error.splitlines()
    assert any(line.startswith("segmenting: 3/3 img [") for line in lines), error
    assert any(line.startswith("evaluating: 2/2 img [") for line in lines), error
    assert isinstance(progress_bar(3, desc="x"), LogLines)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: the live bar
    bar = progress_bar(3, desc="x")
    assert not isinstance(bar, LogLines)
    bar.close()
