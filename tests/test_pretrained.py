"""Saved models in the Hugging Face layout: a fine-tuned model saved and loaded back with its source recorded, the
published checkpoints exported as such folders (the same logits as the ``.pth``), pushed to a Hub and loaded back
by name (offline: the upload is captured and served by a local server that answers as the Hub does), torch.hub."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings

import pytest
import torch

import resnest_zoo
from resnest_zoo.catalogue import get_entry
from resnest_zoo.publish import export_hub_folder
from resnest_zoo.errors import CheckpointNotAvailableError, PretrainedNotFoundError
from resnest_zoo.models.segmentor import build_segmentor
from resnest_zoo.weights.model_file import read_model_metadata
from resnest_zoo.weights.checkpoint import read_state_dict
from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning
from resnest_zoo.weights.sources import SourceSettings
from download_helpers import checkpoint_state_dict, download_entry

from conftest import REPO_ROOT
from download_helpers import fast_settings, isolate, quietly
from finetune_helpers import CLASSES, small_config
from http_server import FileServer


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_tensors(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_fine_tuned_model_is_saved_with_its_source_and_loads_back(published_checkpoint, tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    path, _ = published_checkpoint("fcn", "voc")
    digest = _sha256(path)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.link(path, mirror / get_entry("fcn", "voc").filename)
    monkeypatch.setenv("RESNEST_ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("RESNEST_ZOO_OFFLINE", "1")  # the mirror folder only (and no publisher's digest to ask for)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedCheckpointWarning)  # unpinned: its first download's digest is kept
        model = resnest_zoo.load("fcn", "voc", device="cpu", num_classes=3, class_names=["crack", "pothole", "road"])
    model.save_pretrained(tmp_path / "saved", metrics={"mIoU": 55.0})
    source = json.loads((tmp_path / "saved" / "config.json").read_text())["source"]
    entry = get_entry("fcn", "voc")
    assert source == {"segmentor": "fcn", "dataset": "voc", "file": entry.filename, "url": entry.url, "sha256": digest}
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "# FCN ResNeSt-101-D8, 3 classes of its own" in card and "fine-tuned from the published `fcn/voc`" in card
    assert f"sha256 `{digest}`" in card and "As reported by the author" in card and "model-index" not in card

    again = resnest_zoo.from_pretrained(tmp_path / "saved", device="cpu")
    assert _same_tensors(model, again) and again.config == model.config
    assert again.entry is entry and again.source_sha256 == digest and not again.training
    recoloured = resnest_zoo.from_pretrained(tmp_path / "saved", device="cpu", num_classes=2)  # new classes again
    assert recoloured.num_classes == 2 and recoloured.config.class_names == ("class_0", "class_1")


@pytest.fixture(scope="module")
def exported(published_checkpoint, tmp_path_factory):
    """fcn/voc's published-layout test checkpoint, and the saved-model folder export_hub_folder makes of it."""
    path, _ = published_checkpoint("fcn", "voc")
    out = tmp_path_factory.mktemp("hub-folders")
    return path, export_hub_folder("fcn", "voc", out, weights=path), out


def test_an_exported_catalogue_folder_gives_the_logits_of_the_published_file(exported):
    path, folder, out = exported
    entry = get_entry("fcn", "voc")
    assert folder == out / entry.name
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    document = json.loads((folder / "config.json").read_text())
    assert document["source"]["sha256"] == _sha256(path) == read_model_metadata(folder / "model.safetensors")["source_sha256"]
    assert document["weights"]["sha256"] == _sha256(folder / "model.safetensors")
    assert document["weights"]["auxiliary_head"] is True and document["metrics"] == {"mIoU": 77.41}
    assert document["model"] == entry.config.to_dict()

    images = torch.randn(1, 3, 64, 96)
    published = resnest_zoo.load("fcn", "voc", weights=path, device="cpu")
    exported = resnest_zoo.from_pretrained(folder, device="cpu")
    assert _same_tensors(exported, published)  # the very same weights, bit for bit
    with torch.no_grad():
        # the same logits up to float rounding: oneDNN's kernels differ with the weights' memory alignment (64-byte
        # aligned in a .pth, at their offsets in a safetensors file), which moves the 7th digit on AVX-512 CPUs
        torch.testing.assert_close(exported(images), published(images), rtol=0, atol=1e-5)
    assert exported.config == published.config and exported.entry is entry
    assert _same_tensors(resnest_zoo.from_pretrained(folder, device="cpu", auxiliary_head=True),
                         resnest_zoo.load("fcn", "voc", weights=path, device="cpu", auxiliary_head=True))

    card = (folder / "README.md").read_text()
    for fact in ("# FCN ResNeSt-101-D8, PASCAL VOC", "type: mean_iou",
                 "value: 77.41", "| mIoU | 77.41 |", "learning rate 0.01 with poly decay, batch size 16, 60 epochs",
                 f"[training log]({entry.log_url})", f"[config]({entry.config_url})", f"[checkpoint]({entry.url})",
                 "| 15 | person |", "datasets:\n- voc", "Converted from the published checkpoint"):
        assert fact in card, fact


def _serve_folder(hub: FileServer, repo: str, folder) -> None:
    for file in folder.iterdir():
        hub.add(f"{repo}/resolve/main/{file.name}", file, headers={"X-Repo-Commit": "c" * 40})


def test_the_catalogue_hub_source_reads_an_exported_folder_checked_through_its_config(exported, tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    path, folder, _ = exported
    digest = _sha256(path)
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    with open(tampered / "model.safetensors", "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with FileServer() as hub:
        _serve_folder(hub, "zoo/fcn-voc", folder)
        _serve_folder(hub, "zoo/tampered", tampered)
        settings = fast_settings(hf_endpoint=hub.base_url, hf_cache_dir=str(tmp_path / "hf"))
        entry = dataclasses.replace(get_entry("fcn", "voc"), hf_repo="zoo/fcn-voc", sha256=digest,
                                    url=hub.url(f"gone/{get_entry('fcn', 'voc').filename}"))
        state, source = checkpoint_state_dict(entry, cache_dir=tmp_path / "cache", progress=False, settings=settings)
        published = read_state_dict(path)
        assert state.keys() == published.keys() and all(torch.equal(state[k], published[k]) for k in state)
        assert source.endswith("model.safetensors") and source.startswith(str(tmp_path / "hf"))
        got = download_entry(entry, cache_dir=tmp_path / "cache", progress=False, settings=settings)
        assert got.sha256 == digest and got.path.name == "model.safetensors"  # the digest is the .pth's, checked
        again, source = checkpoint_state_dict(entry, cache_dir=tmp_path / "cache", settings=dataclasses.replace(
            settings, offline=True))
        assert "model-only copy" in source and torch.equal(again["decoder.7.weight"], published["decoder.7.weight"])

        with pytest.raises(resnest_zoo.CheckpointNotAvailableError) as info:  # a pin the folder was not made from
            quietly(download_entry, dataclasses.replace(entry, sha256="1" * 64), tmp_path / "other", settings=settings)
        assert (f"Hugging Face Hub repo zoo/fcn-voc: its config.json says its tensors were made from a file with sha256 "
                f"{digest}, but {entry.filename} must have sha256 1111") in str(info.value)
        with pytest.raises(resnest_zoo.CheckpointNotAvailableError) as info:  # weights that are not config.json's
            quietly(download_entry, dataclasses.replace(entry, hf_repo="zoo/tampered"), tmp_path / "tampered-cache",
                    settings=settings)
        assert "Hugging Face Hub repo zoo/tampered: model.safetensors has sha256" in str(info.value)
        assert "but its config.json records" in str(info.value) and "gone/" in str(info.value)


@pytest.fixture
def small_saved(tmp_path):
    torch.manual_seed(0)
    model = build_segmentor(small_config())
    return model, model.save_pretrained(tmp_path / "small")


def test_push_to_hub_uploads_the_saved_folder_and_from_pretrained_loads_it_by_name(small_saved, tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    model, _ = small_saved
    uploads = []

    def create_repo(self, repo_id, **options):
        uploads.append(("create", repo_id, options["private"], options["exist_ok"]))

    def upload_folder(self, *, repo_id, folder_path, revision, commit_message, create_pr, **options):
        shutil.copytree(folder_path, tmp_path / "uploaded" / repo_id / revision)
        uploads.append(("upload", repo_id, revision, commit_message, self.token))
        return "https://hub.example/org/road-damage/commit/1234"

    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = model.push_to_hub("org/road-damage", private=True, token="hf_test", revision="v1")
    assert url.endswith("/commit/1234")
    assert uploads == [("create", "org/road-damage", True, True),
                       ("upload", "org/road-damage", "v1", "Upload resnest_zoo model", "hf_test")]
    uploaded = tmp_path / "uploaded" / "org/road-damage" / "v1"
    assert "resnest_zoo.from_pretrained('org/road-damage')" in (uploaded / "README.md").read_text()
    assert "resnest-zoo predict photo.jpg -m hf:org/road-damage" in (uploaded / "README.md").read_text()

    with FileServer() as hub:
        for file in uploaded.iterdir():
            hub.add(f"org/road-damage/resolve/v1/{file.name}", file, headers={"X-Repo-Commit": "c" * 40})
        settings = SourceSettings(hf_endpoint=hub.base_url, hf_cache_dir=str(tmp_path / "hf-cache"))
        monkeypatch.setattr(SourceSettings, "from_env", classmethod(lambda cls, **overrides: settings))
        loaded = resnest_zoo.from_pretrained("org/road-damage", revision="v1", device="cpu")
        assert _same_tensors(model, loaded) and loaded.config.class_names == CLASSES
        assert [r.path.rsplit("/", 1)[1] for r in hub.requests(method="GET")] == ["config.json", "model.safetensors"]
        with pytest.raises(PretrainedNotFoundError, match=r"Hub repository org/road-damage has no config\.json \(HTTP "
                                                          r"404\).*; and there is no folder org/road-damage"):
            resnest_zoo.from_pretrained("org/road-damage", device="cpu")  # main: nothing there
        with pytest.raises(PretrainedNotFoundError, match=r"Hub repository org/other \(revision v1\) has no config\.json"):
            resnest_zoo.from_pretrained("hf:org/other", revision="v1")
    # the server is gone: offline, the Hugging Face cache answers; what is not cached is reported as unavailable
    monkeypatch.setenv("RESNEST_ZOO_OFFLINE", "1")
    monkeypatch.setattr(SourceSettings, "from_env", classmethod(
        lambda cls, **overrides: SourceSettings(offline=True, hf_endpoint=hub.base_url, hf_cache_dir=settings.hf_cache_dir)))
    assert _same_tensors(model, resnest_zoo.from_pretrained("hf:org/road-damage", revision="v1", device="cpu"))
    with pytest.raises(CheckpointNotAvailableError, match=r"could not get config\.json of Hub repository org/road-damage "
                                                          r"\(revision v2\): not in the Hugging Face cache \(RESNEST_ZOO_OFFLINE=1\)"):
        resnest_zoo.from_pretrained("org/road-damage", revision="v2")


def test_torch_hub_loads_a_saved_model(small_saved):
    model, folder = small_saved
    loaded = torch.hub.load(str(REPO_ROOT), "from_pretrained", str(folder), source="local", device="cpu")
    assert _same_tensors(model, loaded) and loaded.config.class_names == CLASSES


def test_a_folded_model_is_not_saved(small_saved, tmp_path):
    model, _ = small_saved
    with pytest.raises(ValueError, match="BatchNorms were folded"):
        resnest_zoo.optimize_for_inference(model.eval()).save_pretrained(tmp_path / "folded")


# ------------------------------------------------------------------------------------------- command line

def _picture(path):
    from finetune_helpers import synthetic_pairs
    from PIL import Image

    images, masks = synthetic_pairs(1)
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(path)
    return masks[0].numpy()


@pytest.mark.slow
def test_predict_takes_a_saved_folder_or_a_hub_repository(small_saved, tmp_path):
    from PIL import Image
    from test_cli import run

    model, folder = small_saved
    _picture(tmp_path / "beach.png")
    done = run("predict", str(tmp_path / "beach.png"), "-m", str(folder), "-o", str(tmp_path / "masks"), "-q")
    assert done.returncode == 0, done.stderr
    mask = Image.open(tmp_path / "masks" / "beach.png")
    assert mask.mode == "P" and mask.size == (64, 64)
    assert mask.getpalette()[:6] == [v for colour in model.config.palette for v in colour]

    with FileServer() as hub:
        for file in folder.iterdir():
            hub.add(f"org/beach/resolve/main/{file.name}", file, headers={"X-Repo-Commit": "c" * 40})
        online = {"RESNEST_ZOO_OFFLINE": "0", "HF_ENDPOINT": hub.base_url, "HF_HUB_CACHE": str(tmp_path / "hf")}
        done = run("predict", str(tmp_path / "beach.png"), "-m", "hf:org/beach", "-o", str(tmp_path / "hub-masks"),
                   "-q", env=online)
        assert done.returncode == 0, done.stderr
        assert Image.open(tmp_path / "hub-masks" / "beach.png").tobytes() == mask.tobytes()
        refused = run("predict", str(tmp_path / "beach.png"), "-m", "hf:org/beach", "--weights", "x.pth", "-o",
                      str(tmp_path / "other"), env=online)
    assert refused.returncode == 2 and "--weights apply to catalogue checkpoints" in refused.stderr
    unknown = run("predict", str(tmp_path / "beach.png"), "-m", "no-such-model", "-o", str(tmp_path / "other"))
    assert unknown.returncode == 2 and "the folder of a saved model, or hf:ORG/NAME" in unknown.stderr


@pytest.mark.slow
def test_export_hub_folder_writes_each_checkpoint_as_a_saved_model(published_checkpoint, tmp_path):
    from test_cli import run

    path, _ = published_checkpoint("fcn", "voc")
    done = run("export", "-m", "fcn/voc", "--weights", str(path), "--hub-folder", str(tmp_path / "hub"), "-q")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "hub" / get_entry("fcn", "voc").name
    assert done.stdout.strip() == str(folder)
    assert json.loads((folder / "config.json").read_text())["source"]["sha256"] == _sha256(path)
    refused = run("export", "-m", "fcn/voc", "--hub-folder", str(tmp_path / "other"), "--dtype", "float16")
    assert refused.returncode == 2 and "drop --dtype" in refused.stderr
    both = run("export", "-m", "fcn/voc", "-o", str(tmp_path), "--hub-folder", str(tmp_path / "other"))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
