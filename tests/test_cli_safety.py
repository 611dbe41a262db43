"""``resnest-zoo`` under misuse: nothing a user does loses a file or ends in a traceback (issue 10).

Run as a user runs it (the installed console script in a subprocess, via ``test_cli.run``). The runs that
must really segment use thin pictures (``1 x 5000``, ``3 x 900``), which the keep-ratio resize turns into a
few thousand pixels, so that a full-size network stays quick on a CPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from resnest_zoo import environment
from resnest_zoo.catalogue import catalogue, get_entry
from resnest_zoo.cli.exit_codes import ExitCode
from resnest_zoo.inference.outputs import MARK, written_by_predict

from test_cli import SCRIPT, _photo, run


def _thin(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The process's stderr, checked to be one ``error: ...`` line and no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def weights(published_checkpoint) -> str:
    path, _ = published_checkpoint("fcn", "voc")
    return str(path)


# ------------------------------------------------------------------------------------------------ data loss

@pytest.mark.slow
def test_an_output_folder_equal_to_the_input_folder_writes_nothing(weights, tmp_path):
    photo = _thin(tmp_path / "same" / "photo.png", 3, 900)
    before = photo.read_bytes()
    done = run("predict", "same", "-m", "fcn/voc", "-o", "same", "--weights", weights, "--device", "cpu",
               cwd=tmp_path, timeout=300)
    assert done.returncode == ExitCode.USAGE
    assert "output folder same is never searched for inputs" in _one_line_error(done)
    assert photo.read_bytes() == before and sorted(p.name for p in photo.parent.iterdir()) == ["photo.png"]


@pytest.mark.slow
def test_an_input_is_never_written_even_with_overwrite(weights, tmp_path):
    photo = _thin(tmp_path / "out" / "photo.png", 3, 900)
    before = photo.read_bytes()
    for extra in ((), ("--overwrite",)):
        done = run("predict", str(photo), "-m", "fcn/voc", "-o", str(photo.parent), "--weights", weights,
                   "--device", "cpu", *extra, timeout=300)
        assert done.returncode == ExitCode.USAGE
        assert "inputs are never written" in _one_line_error(done)
        assert photo.read_bytes() == before


@pytest.mark.slow
def test_predict_dot_twice_never_segments_its_own_predictions(weights, tmp_path):
    _thin(tmp_path / "thin.png", 1, 5000)  # rounded up to 1 x 2048 pixels by the resize, not an error
    _thin(tmp_path / "sub" / "wide.png", 3, 900, seed=1)
    for extra in ((), ("--overlay",)):  # the second run adds the overlays; the masks of the first are its own
        done = run("predict", ".", "-m", "fcn/voc", "--weights", weights, "--device", "cpu", "-q", *extra,
                   cwd=tmp_path, timeout=300)
        assert done.returncode == ExitCode.OK, done.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "predictions").rglob("*")
                  if p.is_file() and p.name != "manifest.jsonl") == [
        "predictions/sub/wide.png", "predictions/sub/wide_overlay.png",
        "predictions/thin.png", "predictions/thin_overlay.png"]
    mask = Image.open(tmp_path / "predictions" / "thin.png")
    assert mask.size == (5000, 1) and mask.mode == "P" and mask.info[MARK] == "mask by fcn/voc"
    assert written_by_predict(tmp_path / "predictions" / "sub" / "wide_overlay.png")


@pytest.mark.slow
def test_a_file_predict_did_not_write_is_replaced_only_with_overwrite(weights, tmp_path):
    _thin(tmp_path / "images" / "a.png", 3, 900)
    mine = _thin(tmp_path / "masks" / "a.png", 8, 8, seed=3)  # the user's own picture, where the mask would go
    before = mine.read_bytes()
    command = ("predict", str(tmp_path / "images"), "-m", "fcn/voc", "-o", str(tmp_path / "masks"),
               "--weights", weights, "--device", "cpu", "-q")
    refused = run(*command, timeout=300)
    assert refused.returncode == ExitCode.USAGE
    line = _one_line_error(refused)
    assert "1 output file(s) already exist and were not written by resnest-zoo predict" in line
    assert str(mine) in line and "--overwrite" in line
    assert mine.read_bytes() == before
    done = run(*command, "--overwrite", timeout=300)
    assert done.returncode == ExitCode.OK, done.stderr
    assert written_by_predict(mine) and Image.open(mine).size == (900, 3)


def test_masks_are_recognised_by_their_png_text_chunk(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text(MARK, "mask by fcn/voc")
    Image.new("P", (4, 4)).save(tmp_path / "ours.png", pnginfo=info)
    Image.new("P", (4, 4)).save(tmp_path / "plain.png")
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "folder.png").mkdir()
    assert written_by_predict(tmp_path / "ours.png")
    for name in ("plain.png", "text.png", "folder.png", "absent.png"):
        assert not written_by_predict(tmp_path / name), name


# ------------------------------------------------------------------------- one line, documented exit code

@pytest.mark.slow  # only for the checkpoint fixture: the run itself stops before loading it
@pytest.mark.parametrize("output", ["photo.png/masks", "/proc/masks"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_loading(weights, tmp_path, output):
    if output.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc (a folder not even root can write)")
    photo = _thin(tmp_path / "photo.png", 3, 900)
    done = run("predict", str(photo), "-m", "fcn/voc", "-o", output, "--weights", weights, "--device", "cpu",
               "-q", cwd=tmp_path, timeout=300)
    assert done.returncode == ExitCode.USAGE
    assert f"cannot write masks into {output}" in _one_line_error(done)


@pytest.mark.parametrize("device, fragment", [
    ("cuda:99", "CUDA device"),
    ("gpu", "is not a device name torch understands"),
])
def test_a_device_that_is_not_there_exits_2_before_loading(tmp_path, device, fragment):
    photo = _photo(tmp_path / "photo.png", (32, 24))
    done = run("predict", str(photo), "-m", "fcn/voc", "--device", device, "-o", str(tmp_path / "out"),
               "--weights", str(tmp_path / "absent.pth"))
    assert done.returncode == ExitCode.USAGE
    line = _one_line_error(done)
    assert fragment in line and "devices found here: cpu" in line and "absent.pth" not in line


@pytest.mark.slow  # only for the checkpoint fixture: the run itself stops before loading it
def test_cuda_on_a_machine_without_cuda_says_so(weights, tmp_path):
    photo = _thin(tmp_path / "photo.png", 3, 900)
    done = run("predict", str(photo), "-m", "fcn/voc", "--device", "cuda", "-o", str(tmp_path / "out"),
               "--weights", weights, "-q", env={"CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert done.returncode == ExitCode.USAGE
    assert "no CUDA device is available" in _one_line_error(done)


BAD_VALUES = {
    environment.RETRIES.name: "abc",
    environment.RETRY_DELAY.name: "soon",
    environment.TIMEOUT.name: "-1",
    environment.OFFLINE.name: "maybe",
    environment.HF_OFFLINE.name: "perhaps",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_every_bad_environment_variable_is_one_line_and_exit_2(tmp_path, name):
    assert {variable.name for variable in environment.VARIABLES} >= set(BAD_VALUES)
    env = {"RESNEST_ZOO_OFFLINE": "0", "RESNEST_ZOO_CACHE": str(tmp_path / "cache"), name: BAD_VALUES[name]}
    photo = _photo(tmp_path / "photo.png", (32, 24))
    commands = [("download", "-m", "fcn/voc", "-q")]
    if name == environment.RETRIES.name:  # the other commands that read the environment, once
        commands += [("predict", str(photo), "-m", "fcn/voc", "-o", str(tmp_path / "out"), "--device", "cpu", "-q"),
                     ("export", "-m", "fcn/voc", "-o", str(tmp_path / "export"), "-q")]
    for command in commands:
        done = run(*command, env=env)
        assert done.returncode == ExitCode.USAGE, (command, done.stderr)
        line = _one_line_error(done)
        assert name in line and repr(BAD_VALUES[name]) in line, (command, line)


@pytest.mark.parametrize("command", [("list",), ("list", "--urls"), ("--help",), ("cache", "list"),
                                     ("verify", "README.md")])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, command):
    """``resnest-zoo list | head -3``: the reader is gone before the output is written."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        environment_ = {k: v for k, v in os.environ.items() if not k.startswith("RESNEST_ZOO_")}
        environment_["RESNEST_ZOO_CACHE"] = str(tmp_path / "cache")
        done = subprocess.run([str(SCRIPT), *command], stdout=writer, stderr=subprocess.PIPE, text=True,
                              env=environment_, cwd=Path(__file__).resolve().parents[1], timeout=120)
    finally:
        os.close(writer)
    quiet_codes = {ExitCode.BROKEN_PIPE} | ({ExitCode.OK} if command == ("--help",) else set())  # argparse
    assert done.stderr == "" and done.returncode in quiet_codes  # ignores write errors in --help itself


def test_list_piped_into_head_prints_no_error(tmp_path):
    done = subprocess.run(["bash", "-c", f"'{SCRIPT}' list --cache-dir '{tmp_path}' | head -3"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 3 and done.stderr == ""


# ---------------------------------------------------------------------------------------------- warnings

def test_the_command_prints_each_warning_as_one_clean_line():
    """Any warning raised while a command runs (here from a stand-in for ``list``) prints as one line."""
    script = ("import sys, warnings\nfrom resnest_zoo.cli import app, checkpoints\n"
              "def warns(args):\n    warnings.warn('first line\\n  and its continuation')\n    return 0\n"
              "checkpoints._cmd_list = warns  # read when the parser is built\n"
              "code = app.main(['list'])\n"
              "assert warnings.formatwarning is not app._one_line  # put back after the command\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stderr == "warning: first line and its continuation\n"


@pytest.mark.slow
def test_the_unpinned_checkpoint_warning_has_no_source_line(weights, tmp_path):
    from http_server import FileServer

    with FileServer() as server:
        server.add(f"mirror/{get_entry('fcn', 'voc').filename}", Path(weights))
        done = run("download", "-m", "fcn/voc", "-q", env={"RESNEST_ZOO_OFFLINE": "0", "RESNEST_ZOO_MIRROR":
                                                         server.url("mirror"), "RESNEST_ZOO_CACHE": str(tmp_path)})
    assert done.returncode == ExitCode.OK, done.stderr
    assert ".py:" not in done.stderr and "Warning:" not in done.stderr
    assert all(line.startswith("warning: ") for line in done.stderr.splitlines() if "pinned" in line)


# -------------------------------------------------------------------------------------------- list --urls

def test_list_urls_gives_every_download_address_for_offline_users(tmp_path):
    done = run("list", "--urls", "--cache-dir", str(tmp_path))
    assert done.returncode == ExitCode.OK, done.stderr
    for entry in catalogue().values():
        line = next(line for line in done.stdout.splitlines() if line.split()[:2] == [entry.segmentor, entry.dataset])
        assert entry.url in line.split()


def test_fp16_takes_the_half_precision_type_the_cpu_has(monkeypatch):
    import torch

    from resnest_zoo import devices

    cpu = torch.device("cpu")
    for native, chosen in (({torch.bfloat16, torch.float16}, torch.bfloat16), ({torch.float16}, torch.float16)):
        monkeypatch.setattr(devices, "native_half_precision", lambda device, dtype, native=native: dtype in native)
        assert devices.half_precision(cpu) == chosen
    monkeypatch.setattr(devices, "native_half_precision", lambda device, dtype: False)
    with pytest.raises(ValueError, match="no native bfloat16 .*about 7 times slower.*float32 is the fastest here$"):
        devices.half_precision(cpu)
