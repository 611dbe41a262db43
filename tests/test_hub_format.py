"""Bad input, each with its own error: classes that do not describe classes (refused before anything is read),
and saved-model folders that are not ours, too new, incomplete, malformed or whose files do not belong together.
Also: the config round-trips, and ``config.json`` is the documented format."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import resnest_zoo
from resnest_zoo.catalogue import catalogue
from resnest_zoo.config import ModelConfig, generate_palette, new_classes
from resnest_zoo.errors import (
    ConfigFormatError,
    ConfigVersionError,
    ForeignConfigError,
    IntegrityError,
    InvalidClassesError,
    PretrainedNotFoundError,
)
from resnest_zoo.formats.saved_model import FORMAT_VERSION, parse_record
from resnest_zoo.models.segmentor import build_segmentor

from finetune_helpers import small_config

NO_FILE = "/nonexistent/never-read.pth"  # reading it would fail differently: classes are checked first


# ------------------------------------------------------------------------------------------- classes

@pytest.mark.parametrize("options, message", [
    ({"num_classes": 0}, r"num_classes must be a positive integer, got 0 \(int\)"),
    ({"num_classes": -3}, r"num_classes must be a positive integer, got -3"),
    ({"num_classes": 2.5}, r"num_classes must be a positive integer, got 2\.5 \(float\)"),
    ({"num_classes": True}, r"num_classes must be a positive integer, got True \(bool\)"),
    ({"num_classes": "5"}, r"num_classes must be a positive integer, got '5' \(str\)"),
    ({"num_classes": 3, "class_names": ["a", "b"]}, r"class_names has 2 names but num_classes is 3"),
    ({"class_names": "road"}, r"class_names must be a list of strings, one per class, got 'road'"),
    ({"class_names": ["road", "road", "car"]}, r"class_names must be distinct, but 'road' appear"),
    ({"class_names": ["road", ""]}, r"class_names must be non-empty strings, got ''"),
    ({"class_names": []}, r"class_names is empty"),
    ({"num_classes": 2, "palette": [[0, 0, 0, 0], [1, 1, 1, 1]]}, r"palette must be 2 RGB colours \(shape \(2, 3\)\) "
                                                                  r"for 2 classes, got \(2, 4\)"),
    ({"num_classes": 3, "palette": [[0, 0, 0], [1, 1, 1]]}, r"palette must be 3 RGB colours .* got \(2, 3\)"),
    ({"num_classes": 2, "palette": [[0, 0, 0], [1, 1]]}, r"palette must be 2 RGB colours .* uneven length"),
    ({"num_classes": 2, "palette": [[0, 0, 0], [1, 256, 1]]}, r"palette values must be in 0-255, got 256 \(class 1, "
                                                              r"channel G\)"),
    ({"num_classes": 2, "palette": [[0, 0, -1], [1, 1, 1]]}, r"got -1 \(class 0, channel B\)"),
    ({"num_classes": 2, "palette": [[0.5, 0, 0], [1, 1, 1]]}, r"palette values must be integers 0-255, got float64"),
    ({"palette": [[0, 0, 0]]}, r"palette must be 21 RGB colours"),  # recolouring the 21 VOC classes
])
def test_bad_classes_are_refused_before_anything_is_read(options, message):
    with pytest.raises(InvalidClassesError, match=message):
        resnest_zoo.load("fcn", "voc", weights=NO_FILE, **options)


def test_classes_default_to_numbered_names_and_a_generated_palette():
    assert new_classes(3) == (("class_0", "class_1", "class_2"), ((0, 0, 0), (128, 0, 0), (0, 128, 0)))
    names, palette = new_classes(class_names=("a", "b"), palette=np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert names == ("a", "b") and palette == ((1, 2, 3), (4, 5, 6))
    assert generate_palette(21) == catalogue()[("fcn", "voc")].palette  # the PASCAL VOC colour map
    assert len(set(generate_palette(1000))) == 1000


# ------------------------------------------------------------------------------------------- config.json

def test_every_catalogue_config_round_trips_through_json():
    for entry in catalogue().values():
        assert ModelConfig.from_dict(json.loads(json.dumps(entry.config.to_dict()))) == entry.config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small model with classes of its own, saved once."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("saved") / "model"
    build_segmentor(small_config()).save_pretrained(folder, metrics={"mIoU": 61.5})
    return folder


def test_config_json_is_the_documented_format(saved):
    document = json.loads((saved / "config.json").read_text())
    assert list(document) == ["library_name", "format_version", "library_version", "model", "weights", "source", "metrics"]
    assert (document["library_name"], document["format_version"]) == ("resnest_zoo", FORMAT_VERSION)
    assert document["model"] == small_config().to_dict()
    assert document["weights"]["file"] == "model.safetensors" and document["weights"]["dtype"] == "float32"
    assert document["weights"]["auxiliary_head"] is False and document["source"] is None
    assert document["metrics"] == {"mIoU": 61.5}
    assert '"palette": [\n      [20, 60, 200],' in (saved / "config.json").read_text()  # colours on one line
    card = (saved / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: resnest_zoo\nlicense: apache-2.0\n")
    assert "| 1 | sand | `#dcbe5a` (220, 190, 90) |" in card and "| mIoU | 61.50 |" in card


def _copy(saved, tmp_path, **changes):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    document = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        target = document
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    (folder / "config.json").write_text(json.dumps(document))
    return folder


def test_a_folder_that_is_not_a_saved_model_is_refused(saved, tmp_path):
    with pytest.raises(PretrainedNotFoundError, match=r"'no-such-folder' is neither a folder nor a Hugging Face Hub"):
        resnest_zoo.from_pretrained("no-such-folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "weights.pth").touch()
    with pytest.raises(PretrainedNotFoundError, match=r"has no config\.json: a saved model is a folder with config\.json "
                                                      r"and model\.safetensors.*\(found: weights\.pth\)"):
        resnest_zoo.from_pretrained(empty)
    without_weights = _copy(saved, tmp_path)
    (without_weights / "model.safetensors").unlink()
    with pytest.raises(PretrainedNotFoundError, match="has no model.safetensors"):
        resnest_zoo.from_pretrained(without_weights)
    with pytest.raises(ValueError, match="revision='v1' applies to Hub repositories"):
        resnest_zoo.from_pretrained(saved, revision="v1")


def test_a_config_of_another_library_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "config.json").write_text(json.dumps({"architectures": ["SegformerForSemanticSegmentation"],
                                                    "model_type": "segformer", "transformers_version": "4.40.0"}))
    with pytest.raises(ForeignConfigError, match=r"is a transformers config \(model_type 'segformer'.*load it with "
                                                 r"transformers\. A model saved by resnest_zoo has library_name"):
        resnest_zoo.from_pretrained(folder)
    other = _copy(saved, tmp_path / "other", library_name="timm")
    with pytest.raises(ForeignConfigError, match="a config of the library 'timm'"):
        resnest_zoo.from_pretrained(other)
    assert issubclass(ForeignConfigError, ConfigFormatError) and issubclass(ConfigVersionError, ConfigFormatError)


def test_a_newer_format_asks_for_an_upgrade(saved, tmp_path):
    folder = _copy(saved, tmp_path, format_version=FORMAT_VERSION + 1, library_version="9.0.0")
    with pytest.raises(ConfigVersionError, match=rf"is in format {FORMAT_VERSION + 1} \(written by resnest_zoo 9\.0\.0\).*"
                                                 rf"reads format {FORMAT_VERSION} and older: upgrade it"):
        resnest_zoo.from_pretrained(folder)


@pytest.mark.parametrize("changes, message", [
    ({"format_version": "1"}, r"format_version is '1', expected a positive integer"),
    ({"model.num_classes": 3}, r"class_names has 2 names but num_classes is 3"),
    ({"model.palette": [[0, 0, 0], [0, 0, 300]]}, r"palette values must be in 0-255, got 300"),
    ({"model.segmentor": "unet"}, r"model\.segmentor is 'unet', expected one of"),
    ({"model.head.pool_scales": [1, 2]}, r"model\.head has argument\(s\) \['pool_scales'\] that FCN does not take"),
    ({"model.backbone.arch": "resnest999"}, r"backbone\.arch is 'resnest999', expected one of"),
    ({"model.preprocessing.std": [1, 0, 1]}, r"preprocessing\.std must be 3 positive numbers"),
    ({"weights.sha256": "abc"}, r"weights\.sha256 must be 64 lowercase hex digits"),
    ({"source": {"segmentor": "fcn"}}, r"source has missing field\(s\) \['dataset', 'file', 'sha256', 'url'\]"),
    ({"metrics": {"mIoU": "high"}}, r"metrics must map names to finite numbers"),
    ({"extra": 1}, r"config\.json has missing field\(s\) \[\] and unknown field\(s\) \['extra'\]"),
])
def test_a_malformed_config_says_which_field(saved, tmp_path, changes, message):
    folder = _copy(saved, tmp_path, **changes)
    with pytest.raises(ConfigFormatError, match=message) as info:
        resnest_zoo.from_pretrained(folder)
    assert str(folder / "config.json") in str(info.value)


def test_not_json_and_weights_of_another_model_are_refused(saved, tmp_path):
    with pytest.raises(ConfigFormatError, match=r"x\.json is not JSON"):
        parse_record("{not json", "x.json")
    folder = _copy(saved, tmp_path)
    with open(folder / "model.safetensors", "r+b") as handle:  # a byte of a tensor changed: the header still parses
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(IntegrityError, match=r"model\.safetensors has sha256 [0-9a-f]{64}, but its config\.json records"):
        resnest_zoo.from_pretrained(folder)
