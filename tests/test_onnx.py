"""``export_onnx``: the file is ``model(x)`` for all four heads at any size, carries what a deployment needs,
and refuses what it cannot do (bad opset, unwritable destination, missing onnx) before any work.

The heads are checked on small segmentors (``deploy_helpers``: ResNeSt-50, 64-channel heads) at tiny inputs;
the graph's operators are those of the full-size models, which ``test_backends.py`` runs once (slow).
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import resnest_zoo
from resnest_zoo.formats.runtime import FORMAT_KEY, INPUT_NAME, METADATA_KEYS, OUTPUT_NAME, RESIZE_RULE, RUNTIME_FORMAT
from resnest_zoo.options import OPSET as DEFAULT_OPSET
from resnest_zoo.options import OPSETS as SUPPORTED_OPSETS
from resnest_zoo.errors import OptionalDependencyError, OutputWriteError, UnsupportedOpsetError
from resnest_zoo.installation import install_command

from deploy_helpers import HEADS, PHOTO, SOURCE_SHA256, reference_logits, small_onnx, small_segmentor, torch_logits

import onnx  # noqa: E402  (the runtimes are in the test extra: missing means failing)
import onnxruntime as ort  # noqa: E402


def session(path) -> "ort.InferenceSession":
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("head", HEADS)
def test_onnxruntime_logits_equal_pytorch_at_two_sizes(head):
    runner = session(small_onnx(head))
    for images, expected in reference_logits(head):
        (logits,) = runner.run(None, {INPUT_NAME: images.numpy()})
        assert logits.shape == expected.shape == (images.shape[0], 21, *images.shape[2:])
        assert np.abs(logits - expected).max() < 1e-4, f"{head} at {tuple(images.shape)}"


def test_graph_has_named_dynamic_input_and_output():
    graph = onnx.load(small_onnx("pspnet"), load_external_data=False).graph
    dims = {tensor.name: [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]
            for tensor in [*graph.input, *graph.output]}
    assert dims == {INPUT_NAME: ["batch", 3, "height", "width"], OUTPUT_NAME: ["batch", 21, "height", "width"]}
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)  # folded
    assert not any(node.op_type.startswith("AdaptiveAvgPool") for node in graph.node)


def test_metadata_carries_what_a_deployment_needs():
    model = small_segmentor("deeplabv3plus")
    proto = onnx.load(small_onnx("deeplabv3plus"), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert set(meta) == set(METADATA_KEYS)
    assert meta[FORMAT_KEY] == RUNTIME_FORMAT
    config = model.config
    assert json.loads(meta["class_names"]) == list(config.class_names)
    assert json.loads(meta["palette"]) == [list(c) for c in config.palette]
    assert json.loads(meta["mean"]) == list(config.preprocessing.mean)
    assert json.loads(meta["std"]) == list(config.preprocessing.std)
    assert json.loads(meta["resize"]) == list(config.preprocessing.resize)
    assert meta["resize_rule"] == RESIZE_RULE
    assert (meta["segmentor"], meta["dataset"], int(meta["num_classes"])) == ("deeplabv3plus", "voc", 21)
    assert meta["source_sha256"] == SOURCE_SHA256
    assert meta["input_shape"] == "batch x 3 x height x width"
    assert {o.domain: o.version for o in proto.opset_import}[""] == DEFAULT_OPSET


def test_export_leaves_the_model_unchanged(tmp_path):
    model = small_segmentor("fcn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        resnest_zoo.export_onnx(model, tmp_path / "fcn.onnx", opset=SUPPORTED_OPSETS.start, dynamic=False,
                                input_size=(64, 96))
    finally:
        model.eval()
    assert model.state_dict().keys() == before.keys()  # BatchNorms still there: the copy was folded
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    # a static export at the lowest supported opset: the one size it was made for, nothing else
    runner = session(tmp_path / "fcn.onnx")
    images = torch.randn(1, 3, 64, 96)
    (logits,) = runner.run(None, {INPUT_NAME: images.numpy()})
    assert np.abs(logits - torch_logits(model, images)).max() < 1e-4
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        runner.run(None, {INPUT_NAME: torch.randn(1, 3, 96, 96).numpy()})
    meta = {p.key: p.value for p in onnx.load(tmp_path / "fcn.onnx", load_external_data=False).metadata_props}
    assert meta["input_shape"] == "1 x 3 x 64 x 96"


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("opset", [10, SUPPORTED_OPSETS.stop, "17", 17.0, True])
def test_unsupported_opset_is_refused_before_writing(tmp_path, opset):
    with pytest.raises(UnsupportedOpsetError, match=f"{SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1}"):
        resnest_zoo.export_onnx(small_segmentor("fcn"), tmp_path / "model.onnx", opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination_is_refused_before_exporting(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputWriteError, match="cannot write"):
        resnest_zoo.export_onnx(small_segmentor("fcn"), blocker / "model.onnx")
    with pytest.raises(OutputWriteError, match="is a folder"):
        resnest_zoo.export_onnx(small_segmentor("fcn"), tmp_path)
    with pytest.raises(ValueError, match=r"end in \.onnx"):
        resnest_zoo.export_onnx(small_segmentor("fcn"), tmp_path / "model.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_other_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="config"):
        resnest_zoo.export_onnx(torch.nn.Conv2d(3, 3, 1), tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        resnest_zoo.export_onnx(small_segmentor("fcn"), tmp_path / "model.onnx", source_sha256="abc")
    with pytest.raises(ValueError, match="at least 32"):
        resnest_zoo.export_onnx(small_segmentor("fcn"), tmp_path / "model.onnx", input_size=(16, 16))


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(OptionalDependencyError, match=re.escape(install_command("onnx"))) as caught:
        resnest_zoo.export_onnx(small_segmentor("fcn"), tmp_path / "model.onnx")
    assert isinstance(caught.value, ImportError)


def test_importing_the_package_never_imports_a_runtime():
    code = (
        "import sys, resnest_zoo, resnest_zoo.api, resnest_zoo.inference.engine, resnest_zoo.deploy.runtime, "
        "resnest_zoo.deploy.onnx, resnest_zoo.deploy.openvino\n"
        "resnest_zoo.export_onnx, resnest_zoo.RuntimeModel\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'openvino'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_deployment_page_snippet_runs_the_file_without_this_package():
    """docs/deployment.md: the ONNX Runtime + NumPy + Pillow snippet, on an exported file and the test photo."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text(encoding="utf-8")
    section = page.split("## Without this package", 1)[1].split("\n## ", 1)[0]
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", section, flags=re.S) if "import onnxruntime" in block]
    code = (snippet.replace('"deeplabv3plus_cityscapes.onnx"', repr(str(small_onnx("pspnet"))))
            .replace('"street.jpg"', repr(str(PHOTO)))
            + "assert labels.shape == image.shape[:2] and labels.max() < len(names) == 21, labels.shape\n"
            + "import sys\nassert not any(m.startswith(('resnest_zoo', 'torch')) for m in sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_channels_last_model_is_exported_in_nchw():
    """With NHWC weights DeepLabV3+ takes a size-dependent shifted multiply-add path (models/heads.py) that tracing
    would bake in at the example's size; the export traces an NCHW copy, whatever the model's layout."""
    from resnest_zoo.deploy.onnx import _prepared_copy

    model = copy.deepcopy(small_segmentor("deeplabv3plus")).to(memory_format=torch.channels_last)
    prepared = _prepared_copy(model, fold_batchnorm=True)
    assert all(p.is_contiguous() for p in prepared.parameters())
    assert any(not p.is_contiguous() for p in model.parameters() if p.ndim == 4)  # the caller's model untouched
