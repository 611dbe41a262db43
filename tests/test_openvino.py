"""OpenVINO: float32 logits equal PyTorch's for all four heads at two sizes from one file (the ONNX export, as
OpenVINO reads it), the IR export (``.xml`` + ``.bin``) keeps graph and metadata, and reduced precision
(bfloat16, float16 where the CPU has it) agrees with float32 PyTorch on the labels of a real photograph."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import resnest_zoo
from resnest_zoo.formats.runtime import FORMAT_KEY, RUNTIME_FORMAT
from resnest_zoo.errors import OptionalDependencyError, OutputWriteError
from resnest_zoo.installation import install_command
from resnest_zoo.deploy.runtime import OpenVINOBackend, RuntimeModel
from resnest_zoo.inference.engine import predict

from deploy_helpers import HEADS, PHOTO, SOURCE_SHA256, reference_logits, small_onnx, small_segmentor, torch_logits

import onnx  # noqa: E402,F401  (the runtimes are in the test extra: missing means failing)
import openvino as ov  # noqa: E402


@pytest.mark.parametrize("head", HEADS)
def test_openvino_float32_logits_equal_pytorch_at_two_sizes(head):
    backend = OpenVINOBackend(small_onnx(head))
    assert backend.metadata.segmentor == head
    for images, expected in reference_logits(head):
        logits = backend.run(images.numpy(), torch.float32)
        assert logits.shape == expected.shape
        assert np.abs(logits - expected).max() < 1e-4, f"{head} at {tuple(images.shape)}"


def test_ir_export_keeps_the_graph_and_the_metadata(tmp_path):
    model = small_segmentor("pspnet")
    xml = resnest_zoo.export_openvino(model, tmp_path / "ir" / "pspnet.xml", source_sha256=SOURCE_SHA256)
    assert xml == tmp_path / "ir" / "pspnet.xml"
    assert sorted(p.name for p in xml.parent.iterdir()) == ["pspnet.bin", "pspnet.xml"]  # nothing left behind
    ir = ov.Core().read_model(str(xml))
    assert ir.get_rt_info([FORMAT_KEY, FORMAT_KEY]).astype(str) == RUNTIME_FORMAT
    loaded = RuntimeModel.from_file(xml, "openvino", config=model.config, source_sha256=SOURCE_SHA256)
    assert loaded.metadata.source_sha256 == SOURCE_SHA256 and loaded.metadata.class_names == model.config.class_names
    images = torch.randn(1, 3, 72, 64)
    with torch.inference_mode():
        assert np.abs(loaded(images).numpy() - torch_logits(model, images)).max() < 1e-4
    # float32 weights in the .bin: the precision is chosen at compile time, not baked in
    assert xml.with_suffix(".bin").stat().st_size > 4 * sum(p.numel() for p in model.parameters()) * 0.9


def test_ir_export_refuses_an_unwritable_destination(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputWriteError, match="cannot write"):
        resnest_zoo.export_openvino(small_segmentor("fcn"), blocker / "model.xml")
    with pytest.raises(ValueError, match=r"end in \.xml"):
        resnest_zoo.export_openvino(small_segmentor("fcn"), tmp_path / "model.onnx")


def test_missing_openvino_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    with pytest.raises(OptionalDependencyError, match=re.escape(install_command("openvino"))):
        resnest_zoo.export_openvino(small_segmentor("fcn"), tmp_path / "model.xml")
    with pytest.raises(OptionalDependencyError, match=re.escape(install_command("openvino"))):
        OpenVINOBackend(small_onnx("fcn"))


# -------------------------------------------------------------------------------------- reduced precision
def _require(dtype: torch.dtype, backend: OpenVINOBackend) -> None:
    if dtype not in backend.dtypes():
        pytest.skip(f"this CPU has no native {dtype} for OpenVINO (capabilities: "
                    f"{backend.core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')})")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_labels_agree_with_float32_pytorch_on_a_photo(dtype):
    """Random weights give smaller logit margins than trained ones, so agreement here is a pessimistic figure."""
    model = small_segmentor("deeplabv3plus")
    runtime = RuntimeModel.from_file(small_onnx("deeplabv3plus"), "openvino", config=model.config)
    _require(dtype, runtime.backend)
    expected = predict(model, PHOTO).labels
    reduced = predict(runtime, PHOTO, dtype=dtype).labels
    assert (reduced == expected).mean() >= 0.995
    assert (predict(runtime, PHOTO).labels == expected).all()  # and float32 is exact


def test_unsupported_precision_is_refused_with_what_the_cpu_can_do(monkeypatch):
    backend = OpenVINOBackend(small_onnx("fcn"))
    monkeypatch.setattr(OpenVINOBackend, "dtypes", lambda self: (torch.float32,))
    with pytest.raises(ValueError, match="computes in float32 on this machine, not bfloat16"):
        backend.run(np.zeros((1, 3, 64, 64), np.float32), torch.bfloat16)
