"""README.md stays true: its set-up commands are CI's, its model table is the catalogue, its API table is
``__all__``, and its quickstart (Python, torch.hub and shell) runs as written against locally served weights."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resnest_zoo
from resnest_zoo.catalogue import catalogue, get_entry

from conftest import REPO_ROOT
from http_server import FileServer

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
PHOTO = REPO_ROOT / "tests" / "data" / "chelsea_160x106.png"


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_setup_commands_are_the_ones_ci_runs():
    commands = code_blocks(section("Set up"), "bash")[0].strip().splitlines()
    assert commands == ['pip install -e ".[test]"', "python -m pytest"]
    ci = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert [line for line in ci if line in commands] == commands


def test_model_table_is_the_catalogue():
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in section("Models").splitlines() if line.startswith("| ") and not line.startswith(("| Segmentor", "| :"))]
    expected = []
    for e in catalogue().values():
        s = e.schedule
        expected.append([
            e.segmentor, e.dataset, str(e.num_classes), "x".join(map(str, e.crop_size)),
            f"{s['lr']} / {s['policy']} / {s['batch_size']} / {s['epochs']}", f"{e.train_set} / {e.eval_set}",
            f"{e.miou:.2f}", "x".join(map(str, e.preprocessing.resize)),
        ])
    assert rows == expected


def test_api_table_documents_exactly_the_public_surface():
    text = section("Python API")
    first_cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", cell)}
    documented |= set(re.findall(r"`([A-Za-z]+Error)`", text))
    assert documented == set(resnest_zoo.__all__) - {"__version__"}


def test_exit_code_table_is_the_commands_own():
    """README's exit codes are cli/exit_codes.py's table (which --help prints too), row for row."""
    from resnest_zoo.cli.exit_codes import MEANINGS, ExitCode

    rows = [tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
            for line in section("Command line").splitlines() if re.match(r"^\| `\d+` \|", line)]
    assert rows == [(f"`{int(code)}`", MEANINGS[code]) for code in ExitCode]


def test_command_line_section_names_every_option_of_predict_and_list():
    from resnest_zoo.cli import build_parser

    text = section("Command line")
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in ("predict", "list"):
        for action in commands[name]._actions:
            if action.option_strings and action.dest not in ("help", "cache_dir", "quiet", "alpha"):
                assert any(flag in text for flag in action.option_strings), (name, action.option_strings)


@pytest.fixture(scope="module")
def served(published_checkpoint):
    """A local HTTP server holding full-size random checkpoints under their published names."""
    with FileServer() as server:
        for key in (("deeplabv3plus", "ade20k"), ("fcn", "voc")):
            path, _ = published_checkpoint(*key)
            server.add(f"assets/{get_entry(*key).filename}", path)
        yield server


def _environment(server: FileServer, cache: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RESNEST_ZOO_", "HF_HUB_OFFLINE"))}
    environment.update({"RESNEST_ZOO_MIRROR": server.url("assets"), "RESNEST_ZOO_CACHE": str(cache),
                        "RESNEST_ZOO_RETRIES": "0", "NO_PROXY": "127.0.0.1", "CUDA_VISIBLE_DEVICES": "",
                        "RESNEST_ZOO_GITHUB_API": server.url("github-api")})  # never the real GitHub API
    return environment


def _street(folder: Path) -> Image.Image:
    photo = Image.open(PHOTO).convert("RGB")
    photo.save(folder / "street.jpg", quality=95)
    return photo


def _run_python(script: str, server: FileServer, folder: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True,
                          env=_environment(server, folder / "cache"), timeout=600)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_python_quickstart_runs_as_written(served, tmp_path):
    python = code_blocks(section("Quickstart"), "python")[0]
    photo = _street(tmp_path)
    done = _run_python(python, served, tmp_path)
    mask = Image.open(tmp_path / "street_mask.png")
    assert mask.mode == "P" and mask.size == photo.size
    assert int(np.asarray(mask).max()) < 150
    assert f"{photo.height}x{photo.width}" in done.stdout or f"{photo.width}x{photo.height}" in done.stdout
    names = get_entry("deeplabv3plus", "ade20k").class_names
    commonest = np.bincount(np.asarray(mask).reshape(-1)).argmax()
    assert names[commonest].split(",")[0] in done.stdout  # the printed summary names the classes present
    assert served.bytes_served(f"assets/{get_entry('deeplabv3plus', 'ade20k').filename}") > 0


@pytest.mark.slow
def test_inference_examples_run_as_written(served, tmp_path):
    (examples,) = code_blocks(section("Inference"), "python")
    _street(tmp_path)
    # the block as written, on a model whose test-time resize is shrunk (256x128 instead of 2048x512) to keep
    # the eight forward passes it makes quick on a CPU
    setup = ("import dataclasses, resnest_zoo\nmodel = resnest_zoo.load('fcn', 'voc')\n"
             "model.config = dataclasses.replace(model.config, preprocessing=dataclasses.replace("
             "model.config.preprocessing, resize=(256, 128)))\n")
    script = (setup + examples +
              "\nassert len(predictions) == 2 and (predictions[0].labels == predictions[1].labels).all()"
              "\nassert tiled.labels.shape == augmented.labels.shape == predictions[0].labels.shape\nprint('OK')\n")
    assert "OK" in _run_python(script, served, tmp_path).stdout


@pytest.mark.slow
def test_torch_hub_quickstart_runs_as_written(served, tmp_path):
    hub = code_blocks(section("Quickstart"), "python")[1]
    assert "/path/to/resnest_zoo" in hub
    script = hub.replace("/path/to/resnest_zoo", str(REPO_ROOT)) + (
        "\nprint('HUB', type(model).__name__, model.num_classes, model.training, "
        "sorted({p.device.type for p in model.parameters()}))\n")
    done = _run_python(script, served, tmp_path)
    assert "HUB DeepLabV3Plus 150 False ['cpu']" in done.stdout


@pytest.mark.slow
def test_shell_quickstart_runs_as_written(served, tmp_path):
    (commands,) = code_blocks(section("Quickstart"), "bash")
    photo = _street(tmp_path)
    (tmp_path / "photos").mkdir()
    photo.resize((80, 53)).save(tmp_path / "photos" / "small.png")
    environment = _environment(served, tmp_path / "cache")
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, capture_output=True,
                          text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "deeplabv3plus/cityscapes" in done.stdout
    assert Image.open(tmp_path / "masks" / "street.png").size == photo.size
    assert Image.open(tmp_path / "masks" / "small_overlay.png").size == (80, 53)
