"""``resnest-zoo export --format onnx|openvino`` and ``resnest-zoo predict --backend ...``: refusals come before any
download or load, as one line with the exit code of their kind (checked in this process, offline); a runtime file
predicts what PyTorch predicts (the console script, in a subprocess); and (slow) a full-size checkpoint goes
through the command's export and ``load(..., runtime_file=...)`` with its labels intact."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

import resnest_zoo
from resnest_zoo.catalogue import get_entry
from resnest_zoo.cli import main
from resnest_zoo.deploy.runtime import RuntimeModel
from resnest_zoo.installation import install_command

from deploy_helpers import PHOTO
from test_backends import tiny
from test_cli import run

import onnx  # noqa: E402,F401  (the runtimes are in the test extra: missing means failing)
import onnxruntime  # noqa: E402,F401
import openvino  # noqa: E402,F401


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A tiny fcn/voc stand-in (the catalogue's preprocessing) and its ONNX export."""
    model = tiny(resize=None)
    return model, resnest_zoo.export_onnx(model, tmp_path_factory.mktemp("cli") / "fcn_voc.onnx")


def test_predict_with_a_runtime_file_writes_the_pytorch_masks(tiny_onnx, tmp_path):
    model, path = tiny_onnx
    done = run("predict", str(PHOTO), "-m", "fcn/voc", "--backend", "onnxruntime", "--runtime-file", str(path),
               "-o", str(tmp_path / "out"), "-q")
    assert done.returncode == 0, done.stderr
    mask = np.asarray(Image.open(tmp_path / "out" / f"{PHOTO.stem}.png"))
    assert np.array_equal(mask, model.predict(PHOTO).labels)


def cli(*args: str) -> tuple[int, str]:
    """``resnest-zoo ARGS`` in this process (refusals need no subprocess): exit code and standard error."""
    import contextlib
    import io

    error = io.StringIO()
    with contextlib.redirect_stderr(error):
        code = main(list(args))
    return code, error.getvalue()


def test_predict_refuses_what_a_runtime_cannot_do_before_loading(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNEST_ZOO_OFFLINE", "1")  # a download attempt would fail with exit 3
    _, path = tiny_onnx
    photo, out = str(PHOTO), str(tmp_path / "out")
    cases = [
        (["-m", "fcn/voc", "--runtime-file", str(path)], 2, "--runtime-file is run by --backend onnxruntime or openvino"),
        (["-m", "fcn/voc", "--backend", "onnxruntime", "--fp16"], 2,
         "computes in float32 only; --backend openvino runs bfloat16"),
        (["-m", "fcn/voc", "--backend", "onnxruntime", "--runtime-file", str(path), "--weights", str(path)], 2,
         "drop --weights"),
        (["-m", "fcn/voc", "--backend", "openvino", "--runtime-file", str(PHOTO)], 4, "neither an OpenVINO IR"),
        (["-m", "fcn/ade20k", "--backend", "openvino", "--runtime-file", str(path)], 4, "holds another model (fcn/voc)"),
        (["-m", "fcn/voc", "-m", "fcn/ade20k"], 2, "give one -m MODEL"),
    ]
    for extra, expected_code, message in cases:
        code, error = cli("predict", photo, "-o", out, *extra)
        assert (code, error.count("\n")) == (expected_code, 1), (extra, error)
        assert message in error, (extra, error)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    code, error = cli("predict", photo, "-m", "fcn/voc", "-o", out, "--backend", "onnxruntime", "--runtime-file", str(path))
    assert code == 2 and install_command("onnx") in error, error  # this clone's: pip install -e "CLONE[onnx]"


def test_export_refuses_bad_options_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNEST_ZOO_OFFLINE", "1")  # a download attempt would fail with exit 3
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (["--format", "onnx", "--opset", "10"], "opset 10 is not supported"),
        (["--format", "openvino", "--dtype", "float16"], "--dtype applies to --format safetensors"),
        (["--opset", "13"], "--opset applies to --format onnx or openvino"),
        (["--format", "onnx", "-o", str(blocker / "sub")], "cannot write into"),
    ]
    for extra, message in cases:
        output = [] if "-o" in extra else ["-o", str(tmp_path / "out")]
        code, error = cli("export", "-m", "fcn/voc", *output, *extra)
        assert code == 2 and message in error, (extra, error)


def test_load_with_a_runtime_backend_exports_the_loaded_checkpoint(published_checkpoint, monkeypatch):
    """Without a runtime file, ``load`` loads the checkpoint on the CPU and hands it to the runtime (the export
    itself is covered by the small models and the slow test)."""
    path, _ = published_checkpoint("fcn", "voc")
    handed = {}

    def record(model, backend):
        handed.update(model=model, backend=backend)
        return "runtime model"

    monkeypatch.setattr(RuntimeModel, "from_segmentor", staticmethod(record))
    assert resnest_zoo.load("fcn", "voc", weights=path, backend="openvino") == "runtime model"
    assert handed["backend"] == "openvino" and handed["model"].entry == get_entry("fcn", "voc")
    assert next(handed["model"].parameters()).device.type == "cpu" and not handed["model"].training


@pytest.mark.slow
def test_full_size_export_then_runtime_file_in_python_and_in_the_command(published_checkpoint, tmp_path):
    """The one full-size export: ResNeSt-101 DeepLabV3+ as OpenVINO IR from the command (recording the checkpoint's
    sha256), loaded back by ``load(..., runtime_file=..., sha256=...)``: float32 labels of the photo (at half
    the VOC test size, 256 x 386, to keep the test short) equal PyTorch's, bfloat16 agree on at least 99.5%."""
    checkpoint, _ = published_checkpoint("deeplabv3plus", "voc")
    digest = resnest_zoo.verify(checkpoint).sha256
    exported = run("export", "-m", "deeplabv3plus/voc", "--format", "openvino", "--weights", str(checkpoint),
                   "-o", str(tmp_path / "ir"), "-q", timeout=600)
    assert exported.returncode == 0, exported.stderr
    xml = tmp_path / "ir" / "deeplabv3plus_resnest101os8_voc_train.xml"
    assert exported.stdout.strip() == str(xml) and xml.with_suffix(".bin").is_file()

    model = resnest_zoo.load("deeplabv3plus", "voc", weights=checkpoint, device="cpu")
    runtime = resnest_zoo.load("deeplabv3plus", "voc", backend="openvino", runtime_file=xml, sha256=digest)
    expected = model.predict(PHOTO, scales=(0.5,), probabilities=True)
    got = runtime.predict(PHOTO, scales=(0.5,), probabilities=True)
    assert np.array_equal(got.labels, expected.labels)
    assert np.abs(got.probabilities - expected.probabilities).max() < 1e-4
    if torch.bfloat16 in runtime.backend.dtypes():
        agreement = (runtime.predict(PHOTO, scales=(0.5,), dtype=torch.bfloat16).labels == expected.labels).mean()
        assert agreement >= 0.995, agreement
