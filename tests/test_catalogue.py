"""checkpoints.json: schema, agreement with the published table, name resolution, and the twelve builds."""
from __future__ import annotations

import copy
import json
import re

import pytest
import torch

import resnest_zoo
from resnest_zoo.catalogue import (
    DATASET_KEYS,
    SEGMENTORS,
    catalogue,
    get_entry,
    parse_catalogue,
    resolve_dataset,
    resolve_segmentor,
)
from resnest_zoo.datasets import DATASETS
from resnest_zoo.errors import CatalogueError, UnknownModelError
from resnest_zoo.models.segmentor import build_segmentor

from conftest import REPO_ROOT, SEED_TABLE

PACKAGED = REPO_ROOT / "resnest_zoo" / "checkpoints.json"


def _document() -> dict:
    return json.loads(PACKAGED.read_text())


def _seed_rows() -> list[dict]:
    """Parse the published markdown table independently of the catalogue code."""
    if not SEED_TABLE.exists():
        pytest.skip(f"seed table not found at {SEED_TABLE}")
    datasets = {"PASCAL VOC": "voc", "ADE20k": "ade20k", "CityScapes": "cityscapes"}
    segmentors = {"FCN": "fcn", "PSPNet": "pspnet", "DeepLabV3": "deeplabv3", "DeepLabV3plus": "deeplabv3plus"}
    rows, dataset = [], None
    for line in SEED_TABLE.read_text().splitlines():
        if line.startswith("#### "):
            dataset = datasets[line[5:].strip()]
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 7 and cells[0] in segmentors:
            links = dict(re.findall(r"\[(\w+)\]\(([^)]+)\)", cells[6]))
            rows.append({
                "segmentor": segmentors[cells[0]], "dataset": dataset, "crop": cells[2], "schedule": cells[3],
                "sets": cells[4], "miou": float(cells[5].rstrip("%")), "links": links,
            })
    return rows


def test_root_file_is_the_packaged_file():
    assert (REPO_ROOT / "checkpoints.json").read_text() == PACKAGED.read_text()


def test_catalogue_has_twelve_valid_records():
    entries = catalogue()
    assert len(entries) == 12
    assert set(entries) == {(s, d) for s in SEGMENTORS for d in DATASET_KEYS}
    for entry in entries.values():
        assert entry.num_classes == {"voc": 21, "ade20k": 150, "cityscapes": 19}[entry.dataset]
        assert entry.num_classes == len(entry.class_names) == len(entry.palette)
        assert entry.preprocessing.mean == (123.675, 116.28, 103.53)
        assert entry.preprocessing.std == (58.395, 57.12, 57.375)
        assert entry.preprocessing.resize == ((2048, 1024) if entry.dataset == "cityscapes" else (2048, 512))
        assert entry.inference == {"mode": "whole"} and entry.config.inference_mode == "whole"
        # never an invented digest: null until pinned from the real file
        assert entry.sha256 is None and entry.size is None


def test_catalogue_matches_the_published_table():
    rows = _seed_rows()
    assert len(rows) == 12
    for row in rows:
        entry = get_entry(row["segmentor"], row["dataset"])
        assert entry.url == row["links"]["model"]
        assert entry.log_url == row["links"]["log"]
        assert entry.config_url == row["links"]["cfg"]
        assert entry.miou == row["miou"]
        assert "x".join(map(str, entry.crop_size)) == row["crop"]
        lr, policy, batch, epochs = row["schedule"].split(":")[1].strip().split("/")
        assert entry.schedule == {"lr": float(lr), "policy": policy, "batch_size": int(batch), "epochs": int(epochs)}
        assert f"{entry.train_set}/{entry.eval_set}" == row["sets"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("url"), "missing field"),
        (lambda r: r.update(num_classes=20), "num_classes is 20"),
        (lambda r: r.update(sha256="abc"), "sha256 must be 64"),
        (lambda r: r.update(segmentor="unet"), "segmentor 'unet'"),
        (lambda r: r.update(miou="80%"), "field 'miou'"),
        (lambda r: r.update(colour="red"), "unknown field"),
        (lambda r: r["head"].pop("dilations"), "head has missing field.*dilations"),
        (lambda r: r.update(url="http://example.com/other.pth"), "must be https"),
        # fields that would change nothing are refused rather than silently ignored
        (lambda r: r["preprocessing"].update(keep_ratio=False), "preprocessing has missing field.*unknown field.*keep_ratio"),
        (lambda r: r["inference"].update(align_corners=True), "inference has missing field.*unknown field.*align_corners"),
        (lambda r: r["inference"].update(mode="sliding"), "inference.mode must be one of"),
        (lambda r: r["backbone"].update(arch="resnet101"), "backbone.arch is 'resnet101'"),
        (lambda r: r["backbone"].pop("radix"), "backbone has missing field.*radix"),
        (lambda r: r["auxiliary_head"].update(kernel=3), "auxiliary_head has missing field.*unknown field.*kernel"),
        (lambda r: r["preprocessing"].update(std=[1, 0, 1]), "std must be 3 positive"),
    ],
)
def test_schema_violations_are_reported(mutate, message):
    document = copy.deepcopy(_document())
    record = next(r for r in document["checkpoints"] if r["segmentor"] == "deeplabv3plus")
    mutate(record)
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(document)


def test_duplicate_and_missing_entries_are_reported():
    document = _document()
    document["checkpoints"][1] = copy.deepcopy(document["checkpoints"][0])
    with pytest.raises(CatalogueError, match="duplicate"):
        parse_catalogue(document)
    document = _document()
    del document["checkpoints"][-1]
    with pytest.raises(CatalogueError, match="lacks entries"):
        parse_catalogue(document)


@pytest.mark.parametrize("name", ["deeplabv3plus", "DeepLabV3+", "deeplabv3_plus", "DEEPLABV3PLUS", "deeplabv3-plus"])
def test_segmentor_aliases(name):
    assert resolve_segmentor(name) == "deeplabv3plus"


@pytest.mark.parametrize("name, key", [("ade", "ade20k"), ("ADE20K", "ade20k"), ("pascal_voc", "voc"), ("VOC", "voc"),
                                       ("Cityscapes", "cityscapes"), ("pascal-voc", "voc")])
def test_dataset_aliases(name, key):
    assert resolve_dataset(name) == key


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownModelError) as info:
        get_entry("unet", "voc")
    assert "fcn, pspnet, deeplabv3, deeplabv3plus" in str(info.value) and "'unet'" in str(info.value)
    with pytest.raises(UnknownModelError) as info:
        resnest_zoo.build("fcn", "coco")
    assert "voc, ade20k, cityscapes" in str(info.value) and "'coco'" in str(info.value)
    with pytest.raises(TypeError, match="segmentor must be a string"):
        get_entry(3, "voc")


def test_unknown_names_suggest_the_closest_one():
    with pytest.raises(UnknownModelError, match="did you mean deeplabv3plus"):
        get_entry("deeplabv3plsu", "voc")
    with pytest.raises(UnknownModelError, match="did you mean cityscapes"):
        get_entry("fcn", "citiscapes")
    with pytest.raises(UnknownModelError) as info:
        get_entry("unet", "voc")
    assert "did you mean" not in str(info.value)


def _edited_entry(segmentor: str, dataset: str, edit) -> "resnest_zoo.CheckpointEntry":
    document = _document()
    record = next(r for r in document["checkpoints"] if (r["segmentor"], r["dataset"]) == (segmentor, dataset))
    edit(record)
    return parse_catalogue(document)[(segmentor, dataset)]


def test_every_architecture_field_of_the_catalogue_drives_the_build():
    """A user who edits checkpoints.json gets the model the record describes, never a silently different one."""
    def edit(record):
        record["backbone"].update(arch="resnest50", stem_channels=64, radix=4, reduction_factor=2)
        record["head"].update(feats_channels=256, dilations=[1, 6, 12, 18])
        record["auxiliary_head"].update(feats_channels=128)

    entry = _edited_entry("deeplabv3plus", "cityscapes", edit)
    with torch.device("meta"):
        model = build_segmentor(entry, auxiliary_head=True)
    assert len(model.backbone_net.layer3) == 6 and model.backbone_net.stem[0].out_channels == 32
    split_attention = model.backbone_net.layer1[0].conv2
    assert split_attention.radix == 4 and split_attention.fc1.out_channels == max(64 * 4 // 2, 32)
    assert model.aspp_net.parallel_branches[1].depthwise_conv.dilation == (6, 6)
    assert model.aspp_net.bottleneck[0].out_channels == 256
    assert model.auxiliary_decoder[0].out_channels == 128
    assert model.auxiliary_head_shapes()["auxiliary_decoder.0.weight"] == (128, 1024, 3, 3)


def test_the_catalogue_inference_mode_is_predicts_default(monkeypatch):
    from resnest_zoo.inference import engine

    entry = _edited_entry("fcn", "voc", lambda record: record["inference"].update(mode="slide"))
    assert entry.config.inference_mode == "slide"
    model = build_segmentor(entry)
    seen = []
    monkeypatch.setattr(engine, "slide_logits", lambda *args, **kwargs: seen.append(args) or torch.zeros(1, 21, 8, 8))
    model.predict(torch.zeros(3, 8, 8, dtype=torch.uint8))  # tiny: resized keep-ratio, then one slide pass
    assert seen


def test_list_models_returns_the_records():
    models = resnest_zoo.list_models()
    assert len(models) == 12
    assert models == _document()["checkpoints"]


@pytest.mark.parametrize("dataset", DATASET_KEYS)
@pytest.mark.parametrize("segmentor", SEGMENTORS)
def test_every_entry_builds_with_its_class_count(segmentor, dataset):
    entry = get_entry(segmentor, dataset)
    with torch.device("meta"):  # shapes only: the twelve full builds would take ~30 s
        model = build_segmentor(entry)
    classifier = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert classifier.out_channels == entry.num_classes == DATASETS[dataset].num_classes
    assert not model.training and model.entry is entry
    assert not any(k.startswith("auxiliary_decoder.") for k in model.state_dict())
    with torch.device("meta"):
        with_aux = build_segmentor(entry, auxiliary_head=True)
    assert with_aux.state_dict()["auxiliary_decoder.4.weight"].shape == (entry.num_classes, 512, 1, 1)
    assert with_aux.state_dict()["auxiliary_decoder.0.weight"].shape == (512, 1024, 3, 3)
