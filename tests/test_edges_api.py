"""Issue 19, sections 4 and 6 in Python: our typed errors for ``push_to_hub`` without a network (and no attempt at
all offline), a training target with classes the model lacks, a model of one class; and install commands that are
right for a published package and for a clone."""
from __future__ import annotations

import dataclasses
import socket
import sys
from pathlib import Path

import pytest
import torch

import resnest_zoo
from resnest_zoo.catalogue import get_entry
from resnest_zoo.config import new_classes
from resnest_zoo.deploy.optional import require
from resnest_zoo.errors import ClassIdError, HubConnectionError, InvalidClassesError, OptionalDependencyError
from resnest_zoo.installation import install_command, upgrade_command
from resnest_zoo.models.segmentor import build_segmentor
from resnest_zoo.training.loss import segmentation_loss

from conftest import REPO_ROOT
from finetune_helpers import small_config


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmentor(small_config()).eval()


# ------------------------------------------------------------------------------------------------ push_to_hub

@pytest.mark.parametrize("variable", ["RESNEST_ZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_push_to_hub_offline_refuses_at_once_without_touching_the_network(small_model, monkeypatch, variable):
    from huggingface_hub import HfApi

    from resnest_zoo.hub import save

    for name in ("RESNEST_ZOO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")
    touched = []
    for method in ("create_repo", "upload_folder", "whoami"):
        monkeypatch.setattr(HfApi, method, lambda self, *args, method=method, **options: touched.append(method))
    monkeypatch.setattr(save, "save_pretrained", lambda *args, **options: touched.append("save"))
    with pytest.raises(HubConnectionError, match=rf"cannot upload to the Hugging Face Hub repository org/name: "
                                                 rf"offline mode \({variable}=1\) never touches the network"):
        small_model.push_to_hub("org/name", token="hf_test")
    assert touched == []  # refused before saving or asking anything


def test_push_to_hub_without_a_network_says_the_hub_could_not_be_reached(small_model, monkeypatch):
    from huggingface_hub import constants

    for name in ("RESNEST_ZOO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a port nothing listens on: connections are refused, as with no network
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    with pytest.raises(HubConnectionError, match=rf"the Hub at {endpoint} could not be reached \(\w+: .*\); check "
                                                 rf"the network, then try again") as raised:
        small_model.push_to_hub("org/name", token="hf_test")
    assert isinstance(raised.value, ConnectionError) and isinstance(raised.value, resnest_zoo.ResNeStZooError)


# ------------------------------------------------------------------------------------------- loss and classes

def test_a_target_class_the_model_does_not_have_is_our_error_not_an_index_error():
    logits = torch.randn(2, 3, 4, 5)
    target = torch.zeros(2, 4, 5, dtype=torch.long)
    target[0, 0, :3] = 255  # ignored: fine
    assert torch.isfinite(segmentation_loss(logits, target))
    for bad, shown in ((3, "3"), (-1, "-1"), (7, "3, 7")):
        wrong = target.clone()
        wrong[1, 2, 2] = bad
        if bad == 7:
            wrong[1, 3, 3] = 3
        with pytest.raises(ClassIdError, match=rf"target holds class id\(s\) {shown}, but the model predicts 3 "
                                               rf"classes \(ids 0-2, and 255 for pixels to ignore\)"):
            segmentation_loss(logits, wrong)
    with pytest.raises(ClassIdError):  # the auxiliary head's classes are the same: checked once, before either
        segmentation_loss(resnest_zoo.TrainingOutput(logits, logits), target + 3)


def test_one_class_is_refused_with_the_reason_wherever_classes_are_made(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNEST_ZOO_OFFLINE", "1")
    monkeypatch.setenv("RESNEST_ZOO_CACHE", str(tmp_path / "cache"))  # nothing to load: refused before any download
    reason = r"a model needs at least 2 classes, got 1: .*use 2 classes, background and object"
    config = get_entry("fcn", "voc").config
    attempts = [
        lambda: new_classes(1),
        lambda: new_classes(class_names=["crack"]),
        lambda: config.with_classes(["crack"], [(255, 0, 0)]),
        lambda: dataclasses.replace(config, num_classes=1, class_names=("crack",), palette=((255, 0, 0),)),
        lambda: resnest_zoo.load("fcn", "voc", num_classes=1),
        lambda: resnest_zoo.load("fcn", "voc", class_names=["crack"]),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidClassesError, match=reason):
            attempt()
    assert new_classes(2) == (("class_0", "class_1"), ((0, 0, 0), (128, 0, 0)))


# ---------------------------------------------------------------------------------------------- install hints

def test_install_commands_are_right_for_a_published_package_and_for_a_clone(tmp_path, monkeypatch):
    installed = tmp_path / "site-packages" / "resnest_zoo"  # a copy pip installed: no pyproject.toml beside it
    installed.mkdir(parents=True)
    assert install_command("onnx", package=installed) == 'pip install "resnest-zoo[onnx]"'
    assert upgrade_command(package=installed) == "pip install --upgrade resnest-zoo"
    clone = REPO_ROOT / "resnest_zoo"  # this checkout, as README "Set up" installs it
    assert install_command("openvino", package=clone) == f'pip install -e "{REPO_ROOT}[openvino]"'
    assert upgrade_command(package=clone) == f'git -C "{REPO_ROOT}" pull && pip install -e "{REPO_ROOT}"'
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(OptionalDependencyError, match=rf'install it with pip install -e "{REPO_ROOT}\[onnx\]"$'):
        require("onnxruntime", "the onnxruntime backend")
    deployment = (REPO_ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert 'pip install "resnest-zoo[onnx]"' in deployment and 'pip install -e ".[onnx]"' in deployment
    assert 'pip install -e ".[openvino]"' in deployment

