"""torch.hub entry points, exercised through torch.hub itself."""
from __future__ import annotations

import pytest
import torch

import resnest_zoo
from resnest_zoo.catalogue import catalogue

from conftest import REPO_ROOT

ENTRY_POINTS = sorted(entry.hub_name for entry in catalogue().values())


@pytest.fixture
def hub_points_at_this_checkout(monkeypatch):
    """torch.hub.list/help only take GitHub repositories; serve this checkout in place of the download."""
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: str(REPO_ROOT))


def test_hub_list_names_one_entry_point_per_checkpoint(hub_points_at_this_checkout):
    listed = torch.hub.list("owner/resnest_zoo", trust_repo=True)
    assert sorted(listed) == sorted(ENTRY_POINTS + ["load", "from_pretrained"])
    assert "deeplabv3plus_resnest101_cityscapes" in listed


def test_hub_help_shows_classes_miou_and_size(hub_points_at_this_checkout):
    text = torch.hub.help("owner/resnest_zoo", "pspnet_resnest101_ade20k", trust_repo=True)
    assert "PSPNet ResNeSt-101-D8" in text
    assert "Classes: 150 (wall" in text
    assert "Reported mIoU: 46.03%" in text
    assert "pspnet_resnest101os8_ade20k_train.pth" in text and "not pinned yet" in text


def test_hubconf_dependencies_are_importable():
    import importlib

    namespace: dict = {}
    source = (REPO_ROOT / "hubconf.py").read_text()
    dependencies_line = next(line for line in source.splitlines() if line.startswith("dependencies ="))
    exec(dependencies_line, namespace)
    for module in namespace["dependencies"]:
        importlib.import_module(module)


def test_hub_load_local_without_weights():
    model = torch.hub.load(str(REPO_ROOT), "fcn_resnest101_cityscapes", source="local", pretrained=False)
    assert isinstance(model, resnest_zoo.FCN) and model.num_classes == 19 and not model.training
    generic = torch.hub.load(str(REPO_ROOT), "load", "deeplabv3+", "ade", source="local", pretrained=False)
    assert isinstance(generic, resnest_zoo.DeepLabV3Plus) and generic.num_classes == 150


def test_hub_load_local_with_weights(published_checkpoint):
    path, reference = published_checkpoint("deeplabv3plus", "cityscapes")
    model = torch.hub.load(str(REPO_ROOT), "deeplabv3plus_resnest101_cityscapes", source="local",
                           weights=str(path), device="cpu")
    assert torch.equal(model.state_dict()["decoder.3.weight"], reference.state_dict()["decoder.3.weight"])


def test_readme_says_list_and_help_need_a_github_repository():
    """torch.hub.list/help parse their argument as "owner/name" and refuse a clone's path, as README says
    (if a torch release accepts one, this fails and README should say so)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "`torch.hub.list` and `torch.hub.help`" in readme and "take only a GitHub repository" in readme
    with pytest.raises(ValueError):
        torch.hub.list(str(REPO_ROOT), trust_repo=True)
    with pytest.raises(ValueError):
        torch.hub.help(str(REPO_ROOT), "fcn_resnest101_voc", trust_repo=True)
    assert 'torch.hub.load(path, "load", "pspnet", "ade20k", source="local")' in readme


def test_the_names_resnest_zoo_list_shows_are_the_local_entry_points():
    from resnest_zoo.cli import main

    import contextlib
    import io

    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        assert main(["list"]) == 0
    names = [line.split()[-1] for line in shown.getvalue().splitlines()[2:14]]
    assert sorted(names) == ENTRY_POINTS
    model = torch.hub.load(str(REPO_ROOT), names[0], source="local", pretrained=False, device="cpu")
    assert isinstance(model, resnest_zoo.Segmentor)
