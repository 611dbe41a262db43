"""The ``resnest-zoo`` command, run as a user runs it: the installed console script in a subprocess.

Checkpoints come from a local HTTP server (as ``RESNEST_ZOO_MIRROR``) or a local file; every run has its own
cache folder, and offline mode where no download is meant to happen, so no test can reach the internet.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnest_zoo.catalogue import catalogue, get_entry
from resnest_zoo.cli import build_parser
from resnest_zoo.inference.inputs import collect_inputs

from download_helpers import checkpoint_bytes, fitting_checkpoint_bytes, sha256
from http_server import FileServer

SCRIPT = Path(sys.executable).with_name("resnest-zoo")
SUBCOMMANDS = ("list", "download", "verify", "export", "predict", "eval", "cache", "serve")


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``resnest-zoo ARGS`` with a clean resnest_zoo environment plus ``env``; never a real network."""
    assert SCRIPT.is_file(), f"console script {SCRIPT} missing: install the package with pip install -e '.[test]'"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RESNEST_ZOO_", "HF_HUB_OFFLINE"))}
    environment.update({"RESNEST_ZOO_OFFLINE": "1", "RESNEST_ZOO_RETRIES": "0", "NO_PROXY": "127.0.0.1"})
    environment.update(env or {})
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=environment, cwd=cwd,
                          timeout=timeout)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def mirror():
    """A local HTTP server holding a small file that fits fcn/voc, under its published name."""
    with FileServer() as server:
        data = fitting_checkpoint_bytes(3)
        server.add(f"mirror/{get_entry('fcn', 'voc').filename}", data)
        yield server, data


def _online(server: FileServer, cache: Path) -> dict[str, str]:
    return {"RESNEST_ZOO_OFFLINE": "0", "RESNEST_ZOO_MIRROR": server.url("mirror"), "RESNEST_ZOO_CACHE": str(cache),
            "RESNEST_ZOO_GITHUB_API": server.url("github-api")}  # never the real GitHub API


# ------------------------------------------------------------------------------------------------- help

def test_every_command_has_complete_help():
    top = run("--help")
    assert top.returncode == 0, top.stderr
    assert all(name in top.stdout for name in SUBCOMMANDS) and "exit codes" in top.stdout
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == set(SUBCOMMANDS)
    for name, sub in subparsers.items():
        shown = run(name, "--help")
        assert shown.returncode == 0, shown.stderr
        assert "exit codes" in shown.stdout
        text = " ".join(shown.stdout.split())
        for action in sub._actions:  # every option and argument is shown with a description
            if action.help == argparse.SUPPRESS:  # an old spelling kept for one release, hidden from --help
                continue
            assert all(flag in text for flag in action.option_strings), (name, action.option_strings)
            assert action.help and " ".join(action.help.split()) in text, (name, action.dest)


def test_version_and_python_dash_m():
    assert run("--version").stdout.startswith("resnest-zoo ")
    done = subprocess.run([sys.executable, "-m", "resnest_zoo", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("resnest-zoo ")


def test_no_command_or_unknown_option_is_a_usage_error():
    assert run().returncode == 2
    assert run("list", "--bogus").returncode == 2


# --------------------------------------------------------------------------------- list / download / cache

def test_list_shows_the_catalogue_and_what_is_cached(mirror, cache):
    server, _ = mirror
    shown = run("list", "--cache-dir", str(cache))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["model", "classes", "mIoU"]
    rows = [line.split() for line in lines[2:14]]
    assert len(rows) == 12
    for entry in catalogue().values():  # the model column is the name -m takes
        row = next(r for r in rows if r[0] == f"{entry.segmentor}/{entry.dataset}")
        assert row[1] == str(entry.num_classes) and row[2] == f"{entry.miou:.2f}" and "no" in row
    assert run("download", "-m", "fcn/voc", "-q", env=_online(server, cache)).returncode == 0
    rows = [line.split() for line in run("list", "--cache-dir", str(cache)).stdout.strip().splitlines()[2:14]]
    assert [r for r in rows if "yes" in r] == [next(r for r in rows if r[0] == "fcn/voc")]


def test_download_prints_the_verified_path_and_reuses_the_cache(mirror, cache):
    server, data = mirror
    first = run("download", "-m", "FCN/pascal_voc", "-q", env=_online(server, cache))
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path == cache / get_entry("fcn", "voc").filename and path.read_bytes() == data
    served = server.bytes_served()
    again = run("download", "-m", "fcn/voc", "-q", "--sha256", sha256(data), env=_online(server, cache))
    assert again.returncode == 0 and Path(again.stdout.strip()) == path
    assert server.bytes_served() == served  # not downloaded again


def test_download_with_a_wrong_digest_exits_3_and_leaves_no_file(mirror, cache):
    server, _ = mirror
    done = run("download", "-m", "fcn/voc", "-q", "--sha256", "0" * 64, env=_online(server, cache))
    assert done.returncode == 3
    assert "digest mismatch" in done.stderr and "0" * 64 in done.stderr
    assert not (cache / get_entry("fcn", "voc").filename).exists()


def test_download_offline_names_the_file_to_place(cache):
    done = run("download", "--all", "-q", env={"RESNEST_ZOO_CACHE": str(cache)})
    assert done.returncode == 3
    entry = get_entry("fcn", "voc")
    assert "offline" in done.stderr and str(cache / entry.filename) in done.stderr


@pytest.mark.parametrize("args", [("download", "fcn", "mars"), ("download", "fcn"), ("download", "-m", "fcn/voc", "--all"),
                                  ("predict", "x.jpg", "-m", "fcn-voc"), ("predict", "x.jpg", "-m", "unet/voc")])
def test_bad_model_names_exit_2_with_one_line(args, cache):
    done = run(*args, "--cache-dir", str(cache))
    assert done.returncode == 2, done.stderr
    reason = done.stderr.strip().splitlines()[-1]  # argparse prints the usage first, then the one-line reason
    assert "error:" in reason and "Traceback" not in done.stderr


def test_cache_list_and_clear(mirror, cache):
    server, _ = mirror
    assert run("cache", "list", "--cache-dir", str(cache)).stdout.strip() == "the cache holds no resnest_zoo files"
    run("download", "-m", "fcn/voc", "-q", env=_online(server, cache))
    listed = run("cache", "list", "--cache-dir", str(cache))
    assert "fcn_resnest101os8_voc_train.pth" in listed.stdout and "checkpoint" in listed.stdout
    refused = run("cache", "clear", "--cache-dir", str(cache))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert run("cache", "clear", "-m", "fcn", "--cache-dir", str(cache), "--yes").returncode == 2
    cleared = run("cache", "clear", "-m", "fcn/voc", "--yes", "--cache-dir", str(cache))
    assert cleared.returncode == 0 and "2 file(s) removed" in cleared.stdout  # checkpoint and its record
    assert not (cache / get_entry("fcn", "voc").filename).exists()
    assert run("cache", "list", "--cache-dir", str(cache)).stdout.strip() == "the cache holds no resnest_zoo files"


# ---------------------------------------------------------------------------------------- verify / export

def test_verify_prints_digest_and_size(tmp_path):
    data = checkpoint_bytes(5)
    path = tmp_path / "some.pth"
    path.write_bytes(data)
    done = run("verify", str(path))
    assert done.returncode == 0
    assert done.stdout.split() == [sha256(data), str(len(data)), str(path)]
    assert run("verify", str(path), "--sha256", sha256(data).upper()).returncode == 0
    wrong = run("verify", str(path), "--sha256", "1" * 64)
    assert wrong.returncode == 3 and sha256(data) in wrong.stderr
    assert run("verify", str(tmp_path / "absent.pth")).returncode == 2


@pytest.mark.slow
def test_export_writes_safetensors_and_refuses_a_file_of_another_model(published_checkpoint, tmp_path):
    path, model = published_checkpoint("fcn", "voc")
    out = tmp_path / "out"
    done = run("export", "-m", "fcn/voc", "--weights", str(path), "-o", str(out), "--dtype", "float16", "-q",
               env={"RESNEST_ZOO_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    written = Path(done.stdout.strip())
    assert written == out / "fcn_resnest101os8_voc_train.fp16.safetensors" and written.is_file()
    from safetensors import safe_open

    with safe_open(str(written), framework="pt") as handle:
        assert set(handle.keys()) == set(model.state_dict())
    wrong = run("export", "-m", "pspnet/voc", "--weights", str(path), "-o", str(out), "-q")
    assert wrong.returncode == 4 and "does not fit the pspnet/voc" in wrong.stderr


# ----------------------------------------------------------------------------------------------- predict

def _photo(path: Path, size: tuple[int, int]) -> Path:
    """A small natural-looking picture: smooth gradients plus a few shapes."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
    image[h // 4: h // 2, w // 4: w // 2] = (200, 30, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


@pytest.mark.slow
def test_predict_writes_masks_and_overlays_and_skips_a_bad_file(published_checkpoint, tmp_path):
    weights, _ = published_checkpoint("fcn", "voc")
    images = tmp_path / "images"
    _photo(images / "a.jpg", (96, 64))
    _photo(images / "sub" / "b.png", (64, 80))
    (images / "broken.jpg").write_bytes(b"this is not a JPEG")
    out = tmp_path / "masks"
    done = run("predict", str(images), "-m", "fcn/voc", "--weights", str(weights), "-o", str(out), "--overlay",
               "--device", "cpu", env={"RESNEST_ZOO_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert done.returncode == 1, done.stderr  # partial success
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    assert "2 of 3 image(s)" in done.stderr
    for stem, size in (("a", (96, 64)), ("sub/b", (64, 80))):
        mask = Image.open(out / f"{stem}.png")
        assert mask.mode == "P" and mask.size == size
        assert int(np.asarray(mask).max()) < 21
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == size
    assert not (out / "broken.png").exists()


def test_predict_output_names_keep_folders_and_never_collide(tmp_path):
    for name in ("a.jpg", "a.png", "x.y.jpg", "sub/b.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = collect_inputs([str(tmp_path), str(tmp_path / "x.y.jpg"), str(tmp_path / "c.jpg")])
    assert [(item.path.name, str(item.name)) for item in found] == [
        ("a.jpg", "a.jpg"), ("a.png", "a.png"), ("b.png", "sub/b"), ("x.y.jpg", "x.y"), ("c.jpg", "c")]


def test_fp16_is_refused_where_half_precision_is_not_native(tmp_path):
    import torch

    from resnest_zoo.devices import native_half_precision

    image = _photo(tmp_path / "x.png", (32, 32))
    done = run("predict", str(image), "-m", "fcn/voc", "--fp16", "--device", "cpu", "-q",
               "--weights", str(tmp_path / "absent.pth"))
    assert done.returncode == 2
    if native_half_precision("cpu", torch.bfloat16):  # accepted: it goes on to the (missing) weights
        assert "absent.pth" in done.stderr
    else:
        assert "no native bfloat16" in done.stderr and "drop --fp16" in done.stderr


def test_predict_with_no_readable_input_exits_2(tmp_path):
    done = run("predict", str(tmp_path / "missing.jpg"), "-m", "fcn/voc", "-q")
    assert done.returncode == 2 and "no input images" in done.stderr


def test_predict_with_an_unusable_checkpoint_exits_4(tmp_path):
    weights = tmp_path / "tiny.pth"
    weights.write_bytes(checkpoint_bytes(1))
    image = _photo(tmp_path / "x.png", (32, 32))
    done = run("predict", str(image), "-m", "fcn/voc", "--weights", str(weights), "-q", "--device", "cpu")
    assert done.returncode == 4 and "does not fit the fcn/voc" in done.stderr


def test_installed_command_is_on_path_of_the_environment():
    assert shutil.which("resnest-zoo", path=str(SCRIPT.parent)) == str(SCRIPT)


# ------------------------------------------------------------------------------ the cache: verify, read-only

@pytest.mark.slow
def test_cache_verify_reports_damage_and_fix_removes_it(mirror, cache):
    server, data = mirror
    assert run("download", "-m", "fcn/voc", "-q", env=_online(server, cache)).returncode == 0
    path = cache / get_entry("fcn", "voc").filename
    healthy = run("cache", "verify", "--cache-dir", str(cache))
    assert healthy.returncode == 0 and healthy.stdout.startswith(f"ok        {path}: sha256 {sha256(data)}")
    assert "1 file(s) checked, 0 damaged" in healthy.stdout
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped on disk
    damaged = run("cache", "verify", "--cache-dir", str(cache))
    assert damaged.returncode == 3
    assert f"damaged   {path}: digest mismatch: sha256 expected {sha256(data)}" in damaged.stdout
    assert "cache verify --fix" in damaged.stdout and path.exists()
    fixed = run("cache", "verify", "--fix", "--cache-dir", str(cache))
    assert fixed.returncode == 0 and f"{path}: digest mismatch" in fixed.stdout and " -- removed" in fixed.stdout
    assert "1 file(s) checked, 1 damaged, 1 removed" in fixed.stdout and not path.exists()


@pytest.fixture
def read_only_folder(tmp_path):
    """An empty folder no one can write to, and the reason writing fails: chmod where that binds, a read-only
    mount for root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder, "Permission denied"
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root, and no read-only folder can be made here: {mounted.stderr.strip()}")
    try:
        yield folder, "Read-only file system"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("variable, value, says", [
    ("RESNEST_ZOO_CACHE", "file", "file is a file, not a folder; give a folder"),
    ("RESNEST_ZOO_MIRROR", "ftp://mirror.example/zoo", "neither an http(s) URL nor an existing folder (ftp:// is not "),
], ids=["cache-is-a-file", "ftp-mirror"])
def test_a_cache_or_mirror_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, variable, value, says):
    (tmp_path / "file").write_text("not a folder")
    env = {"RESNEST_ZOO_OFFLINE": "0", "RESNEST_ZOO_CACHE": str(tmp_path / "cache")}
    env[variable] = str(tmp_path / value) if value == "file" else value
    done = run("download", "-m", "fcn/voc", "-q", env=env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and variable in line and says in line


@pytest.mark.slow
def test_download_into_a_read_only_cache_folder_is_one_line_and_exit_3(mirror, cache, read_only_folder):
    server, _ = mirror
    folder, reason = read_only_folder
    done = run("download", "-m", "fcn/voc", "-q", "--cache-dir", str(folder), env=_online(server, cache))
    assert done.returncode == 3, done.stderr
    name = get_entry("fcn", "voc").filename
    assert done.stderr.strip().splitlines() == [
        f"error: cannot download {name}: the cache folder {folder} is not writable ({reason}). Choose a writable "
        f"cache folder (--cache-dir, RESNEST_ZOO_CACHE or cache_dir=), or place {name} in it by hand."]
