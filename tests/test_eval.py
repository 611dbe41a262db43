"""``resnest_zoo.evaluate``: the reference's metric on the reference's label maps, the shared loader, bad data.

The model is :class:`ColourSegmentor` (nearest palette colour), on the synthetic datasets of
``tests/synthetic_data.py``; the figures are compared with sssegmentation's own ``Evaluation`` fed with
``model.predict`` label maps and its own dataset classes' ground truth.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnest_zoo
from resnest_zoo.datasets import READERS
from resnest_zoo.errors import DatasetError
from resnest_zoo.metric import ConfusionMatrix, segmentation_metrics

from synthetic_data import ColourSegmentor, synthetic_datasets, write_ade20k  # noqa: F401  (fixture)
from test_datasets import theirs

from ssseg.modules.datasets.pipelines import evaluation  # the oracle (test extra): missing means failing
SCRIPT = Path(sys.executable).with_name("resnest-zoo")


def reference_figures(predictions: list[np.ndarray], labels: list[np.ndarray], num_classes: int) -> dict:
    """sssegmentation's test.py: ground truth outside 0..K-1 set to -1, then Evaluation with ignore_index=-1."""
    targets = []
    for label in labels:
        target = label.astype(np.int32)
        target[(target >= num_classes) | (target < 0)] = -1
        targets.append(target)
    return evaluation.Evaluation([p.astype(np.int32) for p in predictions], targets, num_classes, ignore_index=-1).all_metric_results


def assert_same_figures(result, reference: dict) -> None:
    np.testing.assert_allclose(result.iou, reference["iou"], atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(result.accuracy, reference["accuracy"], atol=1e-6, equal_nan=True)
    assert abs(result.miou - reference["miou"]) < 1e-6
    assert abs(result.pixel_accuracy - reference["all_accuracy"]) < 1e-6
    assert abs(result.mean_accuracy - np.nanmean(reference["accuracy"])) < 1e-6


# ----------------------------------------------------------------------------------------------- metric
def test_confusion_matrix_figures_equal_the_references_evaluation():
    rng = np.random.default_rng(0)
    k = 7
    predictions, labels = [], []
    for height, width in ((40, 50), (64, 30), (17, 90)):
        label = rng.integers(0, 5, size=(height, width))  # classes 5 and 6 never labelled
        label[rng.random((height, width)) < 0.2] = 255  # ignored
        label[:3, :3] = 4
        prediction = rng.integers(0, 4, size=(height, width))  # class 4 labelled, never predicted
        prediction[:, -2:] = 5  # class 5 predicted, never labelled
        predictions.append(prediction)
        labels.append(label)
    confusion = ConfusionMatrix(k)
    for prediction, label in zip(predictions, labels):
        confusion.update(torch.from_numpy(prediction).to(torch.uint8), torch.from_numpy(label).to(torch.uint8))
    ours = confusion.metrics()
    reference = reference_figures(predictions, labels, k)
    assert confusion.counts.dtype == torch.int64 and confusion.counts.shape == (k, k)
    np.testing.assert_allclose(ours.iou, reference["iou"], atol=1e-6, equal_nan=True)
    assert math.isnan(ours.iou[6]) and ours.iou[4] == 0 and ours.iou[5] == 0  # absent / never predicted / never labelled
    np.testing.assert_allclose(ours.accuracy, reference["accuracy"], atol=1e-6, equal_nan=True)
    assert abs(ours.miou - reference["miou"]) < 1e-6
    assert abs(ours.pixel_accuracy - reference["all_accuracy"]) < 1e-6
    assert abs(ours.mean_accuracy - np.nanmean(reference["accuracy"])) < 1e-6
    assert confusion.counts.sum() == sum(int((label != 255).sum()) for label in labels)


def test_metrics_of_an_empty_matrix_are_nan_not_an_error():
    figures = segmentation_metrics(np.zeros((3, 3), dtype=np.int64))
    assert math.isnan(figures.miou) and math.isnan(figures.pixel_accuracy)


# ------------------------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("key", ["voc", "ade20k", "cityscapes"])
def test_evaluate_equals_the_reference_on_predict_outputs(key, synthetic_datasets, tmp_path):
    root = synthetic_datasets[key]
    if key == "voc":  # the reference reads VOC annotations as greyscale (see test_datasets)
        shutil.copytree(root, tmp_path / "voc")
        root = tmp_path / "voc"
        for path in (root / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*.png"):
            Image.fromarray(np.asarray(Image.open(path))).save(path)
    model = ColourSegmentor(key)
    result = resnest_zoo.evaluate(model, root, workers=0, batch_size=2)
    samples = READERS[key].samples(root)
    predictions = [model.predict(sample.image).labels for sample in samples]
    reference_labels = [labels.astype(np.int64) for _, labels in theirs(key, root)]
    reference = reference_figures(predictions, reference_labels, model.num_classes)
    assert_same_figures(result, reference)
    assert result.images == len(samples) and result.dataset == key and result.split == "val"
    hidden = 5 if key in ("voc", "cityscapes") else 3  # labelled, painted in another class's colour
    assert result.iou[hidden] == 0 and result.metrics.labelled[hidden] > 0
    assert np.isnan(result.iou).any()  # classes absent from both
    assert result.published_miou == pytest.approx(model.entry.miou / 100)


def test_a_model_with_classes_of_its_own_is_not_compared_with_the_published_figure(synthetic_datasets):
    """A model fine-tuned from a checkpoint keeps its entry (provenance), but the published mIoU is not its own."""
    model = ColourSegmentor("cityscapes")
    model.config = model.config.with_classes([f"part_{i}" for i in range(19)], model.config.palette)
    result = resnest_zoo.evaluate(model, synthetic_datasets["cityscapes"], dataset="cityscapes", workers=0, limit=1)
    assert model.entry is not None and result.published_miou is None and result.difference is None
    assert "published" not in str(result).splitlines()[-1]


def test_batches_group_equal_shapes_and_change_nothing(synthetic_datasets):
    root = synthetic_datasets["cityscapes"]
    one = ColourSegmentor("cityscapes")
    single = resnest_zoo.evaluate(one, root, workers=0, batch_size=1)
    many = ColourSegmentor("cityscapes", resize=(64, 32))  # three 2:1 pictures resize to 64 x 32, one 3:2 to 48 x 32
    batched = resnest_zoo.evaluate(many, root, workers=2, batch_size=4)
    assert many.calls == [(3, 3, 32, 64), (1, 3, 32, 48)]
    assert len(one.calls) == 4
    np.testing.assert_array_equal(single.confusion, resnest_zoo.evaluate(ColourSegmentor("cityscapes"), root,
                                                                         workers=2, batch_size=3).confusion)
    assert batched.images == 4


def test_limit_takes_the_first_images(synthetic_datasets):
    model = ColourSegmentor("ade20k")
    result = resnest_zoo.evaluate(model, synthetic_datasets["ade20k"], limit=2, workers=0)
    assert result.images == 2 and sum(call[0] for call in model.calls) == 2
    with pytest.raises(ValueError, match="limit"):
        resnest_zoo.evaluate(model, synthetic_datasets["ade20k"], limit=0)


def test_test_time_augmentation_and_slide_options_reach_the_inference(synthetic_datasets):
    model = ColourSegmentor("voc")
    result = resnest_zoo.evaluate(model, synthetic_datasets["voc"], workers=0, scales=(0.5, 1.0), flip=True,
                                  limit=1)
    assert len(model.calls) == 4 and result.protocol["flip"] is True and result.protocol["scales"] == [0.5, 1.0]
    slide = resnest_zoo.evaluate(ColourSegmentor("voc"), synthetic_datasets["voc"], workers=0, mode="slide",
                                 crop_size=48, stride=32, limit=1)
    assert slide.protocol["mode"] == "slide" and slide.miou > 0


def test_result_prints_a_table_and_the_published_comparison(synthetic_datasets):
    result = resnest_zoo.evaluate(ColourSegmentor("ade20k"), synthetic_datasets["ade20k"], workers=0)
    text = str(result)
    lines = text.splitlines()
    assert lines[0].split() == ["class", "IoU", "Acc", "pixels"] and len(lines) == 2 + 150 + 3
    assert lines[2].startswith("wall ") and any(line.startswith("building ") for line in lines)
    assert lines[-1] == (f"mIoU {100 * result.miou:.2f} (published 46.03, {100 * (result.miou - 0.4603):+.2f}; "
                         f"on 5 of the split's 2,000 images)")  # a copy of 5 images: the comparison says so
    assert "pixel accuracy" in lines[-2] and "5 images of ade20k val (5 found; the split has 2,000" in lines[-2]
    assert "<table>" in result._repr_html_() and "wall" in result._repr_html_()
    data = json.loads(result.to_json())
    assert data["miou"] == pytest.approx(100 * result.miou) and data["published_miou"] == pytest.approx(46.03)
    assert len(data["classes"]) == 150 and data["classes"][149]["iou"] is None
    assert resnest_zoo.EvaluationResult is type(result)


def test_a_model_of_another_dataset_is_refused(synthetic_datasets):
    with pytest.raises(ValueError, match="cannot be evaluated on voc"):
        resnest_zoo.evaluate(ColourSegmentor("ade20k"), synthetic_datasets["voc"], dataset="voc")


# ------------------------------------------------------------------------------------------------ bad data
@pytest.fixture
def ade(synthetic_datasets, tmp_path) -> Path:
    """A copy of the synthetic ADE20K folder, to damage."""
    shutil.copytree(synthetic_datasets["ade20k"], tmp_path / "ade")
    return tmp_path / "ade" / "ADEChallengeData2016"


def _fails_before_the_run(root: Path, match: str, key: str = "ade20k") -> None:
    model = ColourSegmentor(key)
    with pytest.raises(DatasetError, match=match):
        resnest_zoo.evaluate(model, root, workers=0)
    assert model.calls == []  # nothing was computed


def test_missing_folder_or_split_list(tmp_path, synthetic_datasets):
    _fails_before_the_run(tmp_path / "nowhere", "does not exist")
    shutil.copytree(synthetic_datasets["voc"], tmp_path / "voc")
    (tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    _fails_before_the_run(tmp_path / "voc", r"split list .*val\.txt.* is missing", "voc")
    shutil.rmtree(tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "JPEGImages")
    _fails_before_the_run(tmp_path / "voc", "no PASCAL VOC", "voc")


def test_image_without_annotation_and_annotation_without_image(ade):
    (ade / "annotations" / "validation" / "ADE_val_00000002.png").unlink()
    _fails_before_the_run(ade, r"1 image\(s\) have no annotation: .*ADE_val_00000002\.jpg \(expected .*ADE_val_00000002\.png\)")
    (ade / "images" / "validation" / "ADE_val_00000002.jpg").unlink()
    (ade / "images" / "validation" / "ADE_val_00000003.jpg").unlink()
    _fails_before_the_run(ade, r"1 annotation\(s\) have no image: .*ADE_val_00000003\.png")


def test_cityscapes_image_without_annotation(synthetic_datasets, tmp_path):
    shutil.copytree(synthetic_datasets["cityscapes"], tmp_path / "c")
    annotation = next((tmp_path / "c" / "cityscapes" / "gtFine").rglob("*_labelIds.png"))
    annotation.unlink()
    _fails_before_the_run(tmp_path / "c", "have no annotation.*_leftImg8bit.png", "cityscapes")


def test_annotation_of_another_size_is_found_before_the_run(ade):
    path = ade / "annotations" / "validation" / "ADE_val_00000004.png"
    Image.open(path).resize((33, 20)).save(path)
    _fails_before_the_run(ade, r"ADE_val_00000004\.png is 33x20 but .*ADE_val_00000004\.jpg is")


@pytest.mark.parametrize("workers", [0, 1])
def test_label_values_the_dataset_cannot_contain_are_named(ade, workers):
    path = ade / "annotations" / "validation" / "ADE_val_00000003.png"
    values = np.asarray(Image.open(path)).copy()
    values[0, :4] = (151, 200, 151, 255)
    Image.fromarray(values).save(path)
    with pytest.raises(DatasetError, match=r"ADE_val_00000003\.png: label values 151, 200, 255 cannot occur"):
        resnest_zoo.evaluate(ColourSegmentor("ade20k"), ade, workers=workers)


def test_colour_annotation_is_refused(ade):
    path = ade / "annotations" / "validation" / "ADE_val_00000001.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(DatasetError, match=r"ADE_val_00000001\.png: annotation of mode 'RGB'"):
        resnest_zoo.evaluate(ColourSegmentor("ade20k"), ade, workers=0)


def test_an_unreadable_image_mid_run_fails_with_its_path_not_a_worker_traceback(ade):
    path = ade / "images" / "validation" / "ADE_val_00000003.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header (and size) is intact, half the pixels are not
    model = ColourSegmentor("ade20k")
    with pytest.raises(DatasetError) as raised:
        resnest_zoo.evaluate(model, ade, workers=1, batch_size=1)
    message = str(raised.value)
    assert message.startswith(f"{path}: truncated or corrupt image") and "Traceback" not in message
    assert len(model.calls) == 2  # the two images before it were evaluated


# ----------------------------------------------------------------------------------------- command line
def test_the_evaluation_page_shows_each_layout_as_its_reader_knows_it():
    from conftest import REPO_ROOT

    page = (REPO_ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
    section = page[page.index("## Layouts\n"):]
    section = section[: section.index("\n## ", 1)]
    for reader in READERS.values():
        assert f"```text\n{reader.layout}\n```" in section, reader.info.key


def test_eval_help_lists_the_options():
    done = subprocess.run([str(SCRIPT), "eval", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for option in ("--data", "--split", "--limit", "--scales", "--flip", "--mode", "--fp16", "--device",
                   "--batch-size", "--workers", "--json", "--weights"):
        assert option in done.stdout


def test_eval_checks_the_data_before_loading_the_model(tmp_path):
    done = subprocess.run([str(SCRIPT), "eval", "-m", "pspnet/ade20k", "--data", str(tmp_path), "--weights",
                           str(tmp_path / "absent.pth")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: no ADE20K") and "Traceback" not in done.stderr


@pytest.mark.slow
def test_eval_command_prints_the_table_and_writes_json(published_checkpoint, tmp_path):
    weights, _ = published_checkpoint("fcn", "ade20k")
    write_ade20k(tmp_path / "data", count=2, sizes=[(900, 4)])  # thin: resized to 9 x 2048, a quick forward
    out = tmp_path / "result.json"
    done = subprocess.run([str(SCRIPT), "eval", "-m", "fcn/ade20k", "--data", str(tmp_path / "data"), "--weights",
                           str(weights), "--device", "cpu", "--workers", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**_clean_environment(), "RESNEST_ZOO_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["class", "IoU", "Acc", "pixels"]
    assert lines[-1].startswith("mIoU ") and "(published 45.74, " in lines[-1]
    data = json.loads(out.read_text())
    assert data["images"] == 2 and data["model"] == "fcn/ade20k" and len(data["confusion"]) == 150


def _clean_environment() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("RESNEST_ZOO_", "HF_HUB_OFFLINE"))} | {
        "RESNEST_ZOO_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_eval_takes_a_saved_model_with_m_and_refuses_one_of_other_classes(tmp_path):
    """``eval -m FOLDER``: a saved model of VOC's classes is evaluated on VOC (the confusion matrix of
    ``resnest_zoo.evaluate`` on the same model); one with classes of its own, or both ways of naming a model, are
    refused with one line and exit code 2."""
    import dataclasses

    from resnest_zoo.catalogue import get_entry
    from resnest_zoo.models.segmentor import build_segmentor

    from finetune_helpers import small_config
    from synthetic_data import write_voc

    config = get_entry("fcn", "voc").config
    config = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, arch="resnest50", output_stride=32),
                                 preprocessing=dataclasses.replace(config.preprocessing, resize=(64, 64)))
    torch.manual_seed(0)
    model = build_segmentor(config).eval()
    folder = model.save_pretrained(tmp_path / "voc-model")
    data = write_voc(tmp_path / "data", count=2)
    env = _clean_environment()
    out = tmp_path / "result.json"
    done = subprocess.run([str(SCRIPT), "eval", "-m", str(folder), "--data", str(data), "--device", "cpu",
                           "--workers", "0", "-q", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    expected = resnest_zoo.evaluate(model, data, device="cpu", workers=0)
    assert json.loads(out.read_text())["confusion"] == expected.confusion.tolist()

    own = build_segmentor(small_config()).save_pretrained(tmp_path / "own")
    refused = subprocess.run([str(SCRIPT), "eval", "-m", str(own), "--data", str(data)], capture_output=True,
                             text=True, timeout=300, env=env)
    assert refused.returncode == 2 and "has classes of its own (2: sea, sand)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    both = subprocess.run([str(SCRIPT), "eval", "fcn", "voc", "-m", str(folder), "--data", str(data)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert both.returncode == 2 and "not both" in both.stderr
