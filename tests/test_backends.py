"""``model.predict(..., backend=...)`` and ``load(..., backend=...)``: the same ``Prediction`` whichever runtime runs the
network -- whole images, sliding windows and test-time augmentation -- and clear errors for files that are not
ours, files of another model, missing runtimes and options a runtime cannot honour.

The engine paths run on a tiny stand-in segmentor (one strided conv), whose export takes milliseconds; the full-size
ResNeSt-101 goes through a runtime once, in ``test_backends_cli.py`` (slow).
"""
from __future__ import annotations

import re
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import resnest_zoo
from resnest_zoo.catalogue import get_entry
from resnest_zoo.errors import OptionalDependencyError, RuntimeFileError, RuntimeModelMismatchError
from resnest_zoo.deploy.runtime import BACKENDS, RuntimeModel, with_backend
from resnest_zoo.inference.engine import predict
from resnest_zoo.installation import install_command

from conftest import randomize_batchnorm
from deploy_helpers import PHOTO, SMALL_TARGET
from test_predict import TinySegmentor

import onnx  # noqa: E402,F401  (the runtimes are in the test extra: missing means failing)
import onnxruntime  # noqa: E402,F401
import openvino  # noqa: E402,F401

RUNTIMES = [b for b in BACKENDS if b != "torch"]


def tiny(segmentor: str = "fcn", dataset: str = "voc", seed: int = 0, resize: tuple[int, int] | None = SMALL_TARGET,
         ) -> TinySegmentor:
    """``test_predict``'s stand-in (one strided conv + BatchNorm + classifier): exports and runs in milliseconds.
    ``resize``: its keep-ratio target (None: the entry's own)."""
    torch.manual_seed(seed)
    config = get_entry(segmentor, dataset).config
    if resize is not None:
        config = replace(config, preprocessing=replace(config.preprocessing, resize=resize))
    return randomize_batchnorm(TinySegmentor(config), seed).eval()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """A tiny fcn/voc stand-in and its ONNX export (the metadata is fcn/voc's, the real resize target included)."""
    model = tiny(resize=None)
    return model, resnest_zoo.export_onnx(model, tmp_path_factory.mktemp("tiny") / "fcn_voc.onnx")


# ------------------------------------------------------------------------------------- same predictions
@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize("options", [
    {},
    {"mode": "slide", "crop_size": 96, "stride": 64, "batch_size": 3},
    {"scales": (0.5, 0.75), "flip": True},
    {"mode": "slide", "crop_size": (40, 60), "stride": 30, "scales": (0.5,), "flip": True},
], ids=["whole", "slide", "tta", "slide+tta"])
def test_runtime_backends_give_the_pytorch_prediction(backend, options):
    model = tiny()
    expected = predict(model, [PHOTO, PHOTO], probabilities=True, **options)
    got = model.predict([PHOTO, PHOTO], probabilities=True, backend=backend, **options)
    for e, g in zip(expected, got):
        assert np.array_equal(g.labels, e.labels)
        assert np.abs(g.probabilities - e.probabilities).max() < 1e-5
        assert g.class_names == e.class_names and np.array_equal(g.palette, e.palette)
        assert np.array_equal(g.image, e.image)


def test_a_segmentor_is_exported_once_until_its_weights_change():
    model = tiny()
    first = with_backend(model, "onnxruntime")
    assert with_backend(model, "onnxruntime") is first
    assert with_backend(model, "torch") is model
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    second = with_backend(model, "onnxruntime")
    assert second is not first
    images = torch.randn(1, 3, 32, 48)
    with torch.inference_mode():
        assert torch.allclose(second(images), model(images), atol=1e-5)


def test_load_runs_a_runtime_file_without_downloading(tiny_file, monkeypatch):
    model, path = tiny_file

    def no_download(*args, **kwargs):
        raise AssertionError("a runtime file needs no checkpoint")

    monkeypatch.setattr("resnest_zoo.api.checkpoint_state_dict", no_download)
    for backend in RUNTIMES:
        runtime = resnest_zoo.load("FCN", "pascal_voc", backend=backend, runtime_file=path)
        assert isinstance(runtime, RuntimeModel) and runtime.entry == get_entry("fcn", "voc")
        assert runtime.backend.name == backend and "fcn" in repr(runtime)
        assert np.array_equal(runtime.predict(PHOTO).labels, model.predict(PHOTO).labels)
        assert np.array_equal(runtime.predict(PHOTO, backend=backend).labels, model.predict(PHOTO).labels)


# --------------------------------------------------------------------------------------------- bad input
def test_a_file_of_another_model_is_refused(tiny_file):
    _, path = tiny_file
    with pytest.raises(RuntimeModelMismatchError, match=r"another model \(fcn/voc\).*\(fcn/ade20k\).*dataset is 'voc', "
                                                        r"expected 'ade20k'.*num_classes is 21, expected 150"):
        resnest_zoo.load("fcn", "ade20k", backend="onnxruntime", runtime_file=path)
    with pytest.raises(RuntimeModelMismatchError, match="segmentor is 'fcn', expected 'pspnet'"):
        resnest_zoo.load("pspnet", "voc", backend="openvino", runtime_file=path)
    with pytest.raises(RuntimeModelMismatchError, match=f"sha256 is not recorded, expected {'cd' * 32}"):
        resnest_zoo.load("fcn", "voc", backend="onnxruntime", runtime_file=path, sha256="CD" * 32)


def test_a_file_that_is_not_ours_is_refused(tmp_path):
    foreign = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's legacy exporter, as resnest_zoo uses it
        torch.onnx.export(nn.Conv2d(3, 21, 1), (torch.zeros(1, 3, 8, 8),), str(foreign), dynamo=False,
                          input_names=["images"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    stray = tmp_path / "notes.xml"
    stray.write_text("<notes/>")
    for backend in RUNTIMES:
        with pytest.raises(RuntimeFileError, match="was not written by resnest_zoo"):
            resnest_zoo.load("fcn", "voc", backend=backend, runtime_file=foreign)
        with pytest.raises(RuntimeFileError, match=str(garbage)):
            resnest_zoo.load("fcn", "voc", backend=backend, runtime_file=garbage)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            resnest_zoo.load("fcn", "voc", backend=backend, runtime_file=tmp_path / "missing.onnx")
    with pytest.raises(RuntimeFileError, match=r"onnxruntime backend reads \.onnx"):
        resnest_zoo.load("fcn", "voc", backend="onnxruntime", runtime_file=stray)
    with pytest.raises(RuntimeFileError, match="OpenVINO can read|neither"):
        resnest_zoo.load("fcn", "voc", backend="openvino", runtime_file=stray)


def test_options_a_runtime_cannot_honour_are_refused(tiny_file):
    model, path = tiny_file
    with pytest.raises(ValueError, match="backend must be one of 'torch', 'onnxruntime', 'openvino', got 'tensorrt'"):
        model.predict(PHOTO, backend="tensorrt")
    with pytest.raises(ValueError, match="computes in float32 on this machine, not bfloat16.*backend='openvino'"):
        model.predict(PHOTO, backend="onnxruntime", dtype=torch.bfloat16)
    runtime = resnest_zoo.load("fcn", "voc", backend="onnxruntime", runtime_file=path)
    with pytest.raises(ValueError, match="runs on onnxruntime.*backend='openvino'"):
        runtime.predict(PHOTO, backend="openvino")
    with pytest.raises(ValueError, match="runs on the CPU"):
        runtime.to("meta")
    assert runtime.to("cpu") is runtime and runtime.to(torch.float32) is runtime
    with pytest.raises(ValueError, match="runs on the CPU, got device='cuda'"):
        resnest_zoo.load("fcn", "voc", backend="openvino", device="cuda")
    with pytest.raises(ValueError, match="backend='onnxruntime' or 'openvino'"):
        resnest_zoo.load("fcn", "voc", runtime_file=path)
    with pytest.raises(ValueError, match="either weights= .* or runtime_file="):
        resnest_zoo.load("fcn", "voc", backend="openvino", runtime_file=path, weights=path)
    with pytest.raises(ValueError, match="inference only"):
        resnest_zoo.load("fcn", "voc", backend="openvino", runtime_file=path, auxiliary_head=True)


@pytest.mark.parametrize("backend, extra", [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_a_missing_runtime_names_its_extra(monkeypatch, backend, extra):
    monkeypatch.setitem(sys.modules, backend, None)  # makes `import <runtime>` fail
    with pytest.raises(OptionalDependencyError, match=re.escape(install_command(extra))):  # [extra], for this install
        tiny(seed=3).predict(PHOTO, backend=backend)
