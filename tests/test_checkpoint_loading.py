"""Checkpoint layouts that must load, and mismatches that must fail with a clear error."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import resnest_zoo
from resnest_zoo.models.strict import describe_state_dict, load_into
from resnest_zoo.weights.checkpoint import extract_state_dict, read_state_dict
from resnest_zoo.errors import CheckpointFormatError, CheckpointMismatchError
from resnest_zoo.models.segmentor import build_segmentor


@pytest.fixture(scope="module")
def source(published_checkpoint):
    """A DeepLabV3+/Cityscapes training file (model + epoch + optimizer) and the model it came from."""
    return published_checkpoint("deeplabv3plus", "cityscapes", with_optimizer=True)


@pytest.fixture(scope="module")
def target():
    """One empty DeepLabV3+/Cityscapes model reused by the in-memory mismatch tests."""
    return resnest_zoo.build("deeplabv3plus", "cityscapes")


def _assert_same_weights(model, reference):
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("auxiliary_decoder.")}
    actual = model.state_dict()
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_training_file_with_optimizer_state_loads(source):
    path, reference = source
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "epoch", "optimizer"}
    model = resnest_zoo.load("deeplabv3plus", "cityscapes", weights=path, device="cpu")
    _assert_same_weights(model, reference)


def test_optimizer_state_is_not_returned_as_model_weights(source):
    path, reference = source
    state_dict = read_state_dict(path)
    assert set(state_dict) == set(reference.state_dict())
    assert not any("momentum" in k or k.startswith("optimizer") for k in state_dict)


@pytest.mark.parametrize("layout", ["model_only", "state_dict_key", "bare", "module_prefix", "safetensors"])
def test_other_layouts_load(layout, source, tmp_path):
    path, reference = source
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    out = tmp_path / f"{layout}.pth"
    if layout == "model_only":
        torch.save({"model": state}, out)
    elif layout == "state_dict_key":
        torch.save({"state_dict": state, "meta": {"epoch": 3}}, out)
    elif layout == "bare":
        torch.save(state, out)
    elif layout == "module_prefix":
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, out)
    else:
        out = tmp_path / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    model = resnest_zoo.load("deeplabv3plus", "cityscapes", weights=out, device="cpu")
    _assert_same_weights(model, reference)


def test_auxiliary_head_is_loaded_when_built(source):
    path, reference = source
    model = resnest_zoo.load("deeplabv3plus", "cityscapes", weights=path, device="cpu", auxiliary_head=True)
    assert torch.equal(model.state_dict()["auxiliary_decoder.0.weight"], reference.state_dict()["auxiliary_decoder.0.weight"])
    images = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        assert model.auxiliary_logits(images).shape == (1, 19, 40, 56)


def test_file_cleaned_of_the_auxiliary_head_loads(source, target):
    _, reference = source
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("auxiliary_decoder.")}
    load_into(target, state)
    _assert_same_weights(target, reference)


def test_wrong_dataset_names_the_entry_it_looks_like(published_checkpoint):
    path, _ = published_checkpoint("deeplabv3plus", "ade20k")
    with pytest.raises(CheckpointMismatchError) as info:
        resnest_zoo.load("deeplabv3plus", "cityscapes", weights=path, device="cpu")
    message = str(info.value)
    assert "deeplabv3plus/ade20k" in message and "150 classes" in message and "19 classes" in message
    assert "decoder.3.weight: file (150, 512, 1, 1), model (19, 512, 1, 1)" in message
    assert "resnest_zoo.load('deeplabv3plus', 'ade20k', weights=...)" in message


def test_wrong_segmentor_names_the_entry_it_looks_like(source, target):
    _, reference = source
    fcn_like = {k: v for k, v in reference.state_dict().items() if k.startswith("backbone_net.")}
    fcn_like["decoder.0.weight"] = torch.zeros(512, 2048, 3, 3)
    fcn_like["decoder.7.weight"] = torch.zeros(19, 512, 1, 1)
    fcn_like["decoder.7.bias"] = torch.zeros(19)
    with pytest.raises(CheckpointMismatchError) as info:
        load_into(target, fcn_like, source="fcn.pth")
    message = str(info.value)
    assert "missing from the file" in message and "aspp_net." in message and "shortcut." in message
    assert "not in the model" in message and "decoder.7.bias" in message
    assert "looks like the fcn/cityscapes checkpoint" in message


def test_missing_unexpected_and_mis_shaped_keys_are_listed(source, target):
    _, reference = source
    state = dict(reference.state_dict())
    del state["backbone_net.layer3.5.conv2.fc1.weight"]
    state["backbone_net.layer5.0.conv1.weight"] = torch.zeros(1)
    state["shortcut.0.weight"] = torch.zeros(32, 256, 1, 1)
    with pytest.raises(CheckpointMismatchError) as info:
        load_into(target, state, source="broken.pth")
    message = str(info.value)
    assert "broken.pth does not fit the deeplabv3plus/cityscapes (19 classes) model" in message
    assert "missing from the file (1): backbone_net.layer3.5.conv2.fc1.weight" in message
    assert "not in the model (1): backbone_net.layer5.0.conv1.weight" in message
    assert "shortcut.0.weight: file (32, 256, 1, 1), model (48, 256, 1, 1)" in message


def test_mis_shaped_auxiliary_head_is_an_error(source, target):
    _, reference = source
    state = dict(reference.state_dict())
    state["auxiliary_decoder.4.weight"] = torch.zeros(150, 512, 1, 1)
    with pytest.raises(CheckpointMismatchError, match=r"auxiliary_decoder.4.weight: file \(150, 512, 1, 1\)"):
        load_into(target, state)


def test_unknown_auxiliary_keys_are_unexpected(source, target):
    _, reference = source
    state = dict(reference.state_dict())
    state["auxiliary_decoder.9.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match=r"not in the model \(1\): auxiliary_decoder.9.weight"):
        load_into(target, state)


def test_failed_load_leaves_the_model_untouched(source, target):
    _, reference = source
    before = target.state_dict()["backbone_net.stem.0.weight"].clone()
    state = {k: v + 1 if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    state.pop("decoder.3.bias")
    with pytest.raises(CheckpointMismatchError):
        load_into(target, state)
    assert torch.equal(target.state_dict()["backbone_net.stem.0.weight"], before)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable PyTorch checkpoint"),
        (b"hello, I am not a checkpoint", "not a readable PyTorch checkpoint"),
        (b"\x0a\x00\x00\x00\x00\x00\x00\x00{not json}", "safetensors file but could not be read"),
    ],
)
def test_non_checkpoint_files_are_rejected(content, message, tmp_path):
    path = tmp_path / "file.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=message):
        read_state_dict(path)


def test_truncated_checkpoint_is_rejected(source, tmp_path):
    path, _ = source
    truncated = tmp_path / "truncated.pth"
    with open(path, "rb") as handle:
        truncated.write_bytes(handle.read(10_000_000))
    with pytest.raises(CheckpointFormatError, match="truncated or corrupted"):
        read_state_dict(truncated)


def test_containers_without_a_state_dict_are_rejected(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"epoch": 3, "notes": "none"}, path)
    with pytest.raises(CheckpointFormatError, match="has no state dict: top-level keys are"):
        read_state_dict(path)
    with pytest.raises(CheckpointFormatError, match="holds a list"):
        extract_state_dict([torch.zeros(1)])


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resnest_zoo.load("fcn", "voc", weights=tmp_path / "nope.pth", device="cpu")


def test_describe_state_dict_recognises_each_head():
    for segmentor, dataset in [("fcn", "voc"), ("pspnet", "ade20k"), ("deeplabv3", "cityscapes"), ("deeplabv3plus", "voc")]:
        with torch.device("meta"):
            model = build_segmentor(resnest_zoo.get_entry(segmentor, dataset), auxiliary_head=True)
        assert describe_state_dict(model.state_dict()) == (segmentor, model.num_classes)
