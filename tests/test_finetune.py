"""Fine-tuning: new classes from a published checkpoint (strict everywhere but the classifiers), the training-mode
output, the loss and schedule against the reference, freezing, the folder reader, and a short fine-tuning run on
the CPU that is saved and loaded back with the same predictions."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import resnest_zoo
from resnest_zoo.catalogue import get_entry
from resnest_zoo.config import generate_palette
from resnest_zoo.datasets import READERS
from resnest_zoo.datasets.annotations import read_label_map
from resnest_zoo.errors import CheckpointMismatchError, DatasetError
from resnest_zoo.models.segmentor import build_segmentor
from resnest_zoo.training import (
    AUXILIARY_LOSS_WEIGHT,
    IGNORE_INDEX,
    SegmentationFolder,
    TrainingTransform,
    poly_lr_scheduler,
    segmentation_loss,
    sgd,
)
from resnest_zoo.models.strict import load_into

from conftest import REPO_ROOT, random_segmentor
from finetune_helpers import CLASSES, PALETTE, calibrate_batchnorm, fine_tune, small_config, synthetic_pairs, write_pairs
from synthetic_data import synthetic_datasets  # noqa: F401  (fixture)

# The losses of the published configs (sssegmentation ssseg/configs/resnest/base_cfg.py), quoted: the pip package
# of the reference ships no configs. resnest_zoo.training.recipe owns these values; this is the oracle's copy.
PUBLISHED_LOSSES = {
    "loss_aux": {"type": "CrossEntropyLoss", "scale_factor": 0.4, "ignore_index": 255, "reduction": "mean"},
    "loss_cls": {"type": "CrossEntropyLoss", "scale_factor": 1.0, "ignore_index": 255, "reduction": "mean"},
}
FCN_CLASSIFIERS = {"decoder.7.weight", "decoder.7.bias", "auxiliary_decoder.4.weight", "auxiliary_decoder.4.bias"}


# ------------------------------------------------------------------------------------------- new classes

def test_new_classes_load_every_published_tensor_but_the_classifiers(published_checkpoint):
    path, reference = published_checkpoint("fcn", "voc")
    model = resnest_zoo.load("fcn", "voc", weights=path, device="cpu", num_classes=5, auxiliary_head=True)
    published, loaded = reference.state_dict(), model.state_dict()
    assert set(model.classifier_keys()) == FCN_CLASSIFIERS and set(loaded) == set(published)
    for key in set(loaded) - FCN_CLASSIFIERS:
        assert torch.equal(loaded[key], published[key]), key
    assert loaded["decoder.7.weight"].shape == loaded["auxiliary_decoder.4.weight"].shape == (5, 512, 1, 1)
    assert loaded["decoder.7.bias"].shape == (5,)
    for key in FCN_CLASSIFIERS:  # freshly initialised: real numbers, not zeros or leftovers of the meta device
        assert loaded[key].device.type == "cpu" and torch.isfinite(loaded[key]).all() and loaded[key].std() > 0
    config = model.config
    assert (config.num_classes, config.dataset, model.num_classes) == (5, None, 5)
    assert config.class_names == ("class_0", "class_1", "class_2", "class_3", "class_4")
    assert config.palette == generate_palette(5) and len(set(config.palette)) == 5
    assert model.entry is get_entry("fcn", "voc") and not model.training


def test_new_classes_are_still_strict_for_every_other_tensor(published_checkpoint, tmp_path):
    path, reference = published_checkpoint("fcn", "voc")
    state = reference.state_dict()
    without = {k: v for k, v in state.items() if k != "backbone_net.stem.0.weight"}
    torch.save({"model": without}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointMismatchError, match=r"missing from the file \(1\): backbone_net\.stem\.0\.weight"):
        resnest_zoo.load("fcn", "voc", weights=tmp_path / "missing.pth", device="cpu", num_classes=5)
    misshaped = dict(state, **{"decoder.0.weight": state["decoder.0.weight"][:256]})
    torch.save({"model": misshaped}, tmp_path / "misshaped.pth")
    with pytest.raises(CheckpointMismatchError, match=r"different shapes \(1\): decoder\.0\.weight"):
        resnest_zoo.load("fcn", "voc", weights=tmp_path / "misshaped.pth", device="cpu", num_classes=5,
                         auxiliary_head=True)
    auxiliary = dict(state, **{"auxiliary_decoder.0.weight": state["auxiliary_decoder.0.weight"][:, :512]})
    torch.save({"model": auxiliary}, tmp_path / "auxiliary.pth")  # checked even when the head is not built
    with pytest.raises(CheckpointMismatchError, match=r"auxiliary_decoder\.0\.weight"):
        resnest_zoo.load("fcn", "voc", weights=tmp_path / "auxiliary.pth", device="cpu", num_classes=5)


def test_reinitialised_keys_must_be_the_models():
    with torch.device("meta"):
        model = build_segmentor(get_entry("fcn", "voc"))
    with pytest.raises(ValueError, match="decoder.9.weight"):
        load_into(model, model.state_dict(), reinitialised=["decoder.9.weight"])


def test_class_names_set_the_count_and_a_palette_alone_recolours(published_checkpoint):
    path, reference = published_checkpoint("fcn", "voc")
    named = resnest_zoo.load("fcn", "voc", weights=path, device="cpu", class_names=["sky", "road", "car"],
                             palette=[[0, 0, 255], [128, 128, 128], [255, 0, 0]])
    assert named.num_classes == 3 and named.config.class_names == ("sky", "road", "car")
    assert named.config.palette[2] == (255, 0, 0)
    colours = np.arange(63).reshape(21, 3)
    recoloured = resnest_zoo.load("fcn", "voc", weights=path, device="cpu", palette=colours)
    assert recoloured.config.dataset == "voc" and recoloured.config.class_names == get_entry("fcn", "voc").class_names
    assert recoloured.config.palette[1] == (3, 4, 5)
    assert torch.equal(recoloured.state_dict()["decoder.7.weight"], reference.state_dict()["decoder.7.weight"])


# ------------------------------------------------------------------------------------------- training mode

def test_training_mode_returns_main_and_auxiliary_logits_and_eval_mode_the_tensor():
    torch.manual_seed(0)
    model = build_segmentor(small_config(), auxiliary_head=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(images)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 2, 64, 64)
        assert torch.equal(logits, torch.nn.functional.interpolate(model.head_logits(images), size=(64, 64),
                                                                   mode="bilinear", align_corners=False))
        output = model.train()(images)
    assert isinstance(output, resnest_zoo.TrainingOutput)
    assert output.logits.shape == output.auxiliary_logits.shape == (2, 2, 64, 64)
    logits, auxiliary = output  # unpacks as a tuple too
    del model.auxiliary_decoder  # as built without it
    assert model(images).auxiliary_logits is None


@pytest.mark.slow
def test_training_forward_and_loss_match_the_reference():
    from ssseg.modules.models.segmentors import BuildSegmentor
    from ssseg.modules.utils import SSSegInputStructure

    from reference import reference_config

    entry = get_entry("fcn", "voc")
    ours = random_segmentor("fcn", "voc", seed=3).train()
    reference = BuildSegmentor(segmentor_cfg=dict(reference_config(entry), losses=PUBLISHED_LOSSES), mode="TRAIN")
    reference.load_state_dict(ours.state_dict(), strict=True)
    reference.train()
    images = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 21, (2, 32, 32))
    target[:, :5] = IGNORE_INDEX
    torch.manual_seed(5)  # the same dropout masks: both heads draw them in the same order
    expected = reference(SSSegInputStructure(images=images, seg_targets=target, mode="TRAIN"))
    torch.manual_seed(5)
    loss = segmentation_loss(ours(images), target)
    assert torch.allclose(loss, expected.loss, rtol=1e-4)


def test_loss_is_the_reference_cross_entropy_with_ignore_index_and_auxiliary_weight():
    from ssseg.modules.models.losses import calculatelosses

    assert (AUXILIARY_LOSS_WEIGHT, IGNORE_INDEX) == (PUBLISHED_LOSSES["loss_aux"]["scale_factor"],
                                                     PUBLISHED_LOSSES["loss_aux"]["ignore_index"])
    generator = torch.Generator().manual_seed(0)
    logits, auxiliary = torch.randn(2, 2, 5, 16, 16, generator=generator)
    target = torch.randint(0, 5, (2, 16, 16), generator=generator)
    target[0, :6] = IGNORE_INDEX
    expected, parts = calculatelosses({"loss_cls": logits, "loss_aux": auxiliary}, {"seg_targets": target},
                                      PUBLISHED_LOSSES)
    assert torch.allclose(segmentation_loss(resnest_zoo.TrainingOutput(logits, auxiliary), target), expected, rtol=1e-6)
    assert torch.allclose(segmentation_loss(logits, target), torch.tensor(parts["loss_cls"]), rtol=1e-6)
    assert torch.allclose(segmentation_loss(resnest_zoo.TrainingOutput(logits, None), target), torch.tensor(parts["loss_cls"]),
                          rtol=1e-6)
    with pytest.raises(ValueError, match=r"target must be \(N, H, W\)"):
        segmentation_loss(logits, target[:, :8])


def test_poly_schedule_is_the_reference_schedule():
    from ssseg.modules.models.schedulers.polyscheduler import PolyScheduler

    model = torch.nn.Linear(2, 2)
    ours = sgd(model, 0.01)
    scheduler = poly_lr_scheduler(ours, 12)
    reference_optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    reference = PolyScheduler(power=0.9, optimizer=reference_optimizer, lr=0.01, max_epochs=3, iters_per_epoch=4)
    for _ in range(12):
        expected = reference.updatelr()
        assert ours.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
        reference.cur_iter += 1
        ours.step()  # no gradients: only the order torch expects
        scheduler.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(0.0001)
    assert (ours.defaults["momentum"], ours.defaults["weight_decay"]) == (0.9, 5e-4)


# ------------------------------------------------------------------------------------------- freezing

def _batchnorm_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


def test_freeze_backbone_keeps_its_weights_and_statistics_and_trains_the_rest():
    torch.manual_seed(0)
    model = build_segmentor(small_config(), auxiliary_head=True).freeze("backbone").train()
    assert model.frozen == ("backbone",) and not model.backbone_net.training and model.decoder.training
    assert not any(p.requires_grad for p in model.backbone_net.parameters())
    backbone = {k: v.clone() for k, v in model.backbone_net.state_dict().items()}
    head = model.decoder[0].weight.clone()
    images, masks = synthetic_pairs(2)
    optimizer = sgd(model, 0.01)
    segmentation_loss(model(images.float() / 255), masks).backward()
    optimizer.step()
    assert all(torch.equal(v, backbone[k]) for k, v in model.backbone_net.state_dict().items())
    assert not torch.equal(model.decoder[0].weight, head)
    assert all(p.requires_grad for p in model.freeze().parameters()) and model.backbone_net.training


def test_freeze_batchnorm_keeps_every_statistic_and_bad_values_are_refused():
    model = build_segmentor(small_config()).freeze("batchnorm").train()
    before = _batchnorm_state(model)
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(v, before[k]) for k, v in _batchnorm_state(model).items())
    assert model.decoder.training and not model.decoder[1].training  # dropout trains, BatchNorm does not
    with pytest.raises(ValueError, match=r"cannot freeze 'head'.*'backbone', 'batchnorm'"):
        model.freeze("head")
    with pytest.raises(ValueError, match="cannot freeze 'everything'"):
        resnest_zoo.load("fcn", "voc", freeze="everything")  # refused before any download


# ------------------------------------------------------------------------------------------- data

def test_segmentation_folder_pairs_images_and_masks_and_says_what_does_not_fit(tmp_path):
    images, masks = synthetic_pairs(3)
    root = write_pairs(tmp_path / "data", images, masks)
    data = SegmentationFolder(root, num_classes=2)
    image, mask = data[1]
    assert len(data) == 3 and torch.equal(image, images[1]) and torch.equal(mask, masks[1])
    transform = TrainingTransform(small_config().preprocessing, crop_size=(48, 80))
    crop, crop_mask = SegmentationFolder(root, num_classes=2, transform=transform)[0]
    assert crop.shape == (3, 48, 80) and crop.dtype == torch.float32 and crop_mask.shape == (48, 80)
    assert set(crop_mask.unique().tolist()) <= {0, 1, IGNORE_INDEX}
    with pytest.raises(DatasetError, match=r"001\.png: label values 1 cannot occur .*expected class ids 0-0, or 255"):
        SegmentationFolder(root, num_classes=1)[1]
    Image.new("L", (7, 5)).save(root / "masks" / "002.png")
    with pytest.raises(DatasetError, match=r"masks/002\.png is 7x5 but .*images/002\.png is"):
        SegmentationFolder(root, num_classes=2)
    (root / "masks" / "001.png").unlink()
    (root / "masks" / "extra.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"image\(s\) have no annotation: .*001\.png .*annotation\(s\) have no "
                                           r"image: .*extra\.png"):
        SegmentationFolder(root, num_classes=2)


def test_a_dataset_split_as_distributed_trains_with_the_evaluation_label_maps(synthetic_datasets):
    """from_dataset reads VOC/ADE20K/Cityscapes through the evaluation readers: the same samples, the same ids."""
    root = synthetic_datasets["cityscapes"]
    reader = READERS["cityscapes"]
    data = SegmentationFolder.from_dataset("Cityscapes", root, split="val")
    assert data.samples == reader.samples(root, "val") and data.num_classes == 19
    for index, sample in enumerate(data.samples):
        image, mask = data[index]
        expected = read_label_map(sample.annotation, reader.mapping_for(sample.annotation))
        assert torch.equal(mask, torch.from_numpy(expected.astype(np.int64)))
        assert tuple(image.shape[1:]) == tuple(mask.shape)


# ------------------------------------------------------------------------------------------- fine-tuning

def test_fine_tuning_learns_the_pattern_and_comes_back_from_save_pretrained(tmp_path):
    images, masks = synthetic_pairs(4)
    root = write_pairs(tmp_path / "data", images, masks)
    config = small_config()
    transform = TrainingTransform(config.preprocessing, scale_range=None, flip=False)
    loader = torch.utils.data.DataLoader(SegmentationFolder(root, num_classes=2, transform=transform), batch_size=4)
    batch, target = next(iter(loader))
    torch.manual_seed(0)
    model = build_segmentor(config, auxiliary_head=True)
    calibrate_batchnorm(model, batch)  # stands in for the published statistics of a real checkpoint
    model.freeze("backbone").train()
    losses = fine_tune(model, batch, target, 8)
    assert losses[-1] < losses[0] / 3, losses
    model.eval()
    predictions = model.predict(list(images.permute(0, 2, 3, 1).numpy()), device="cpu")
    accuracy = np.mean([(p.labels == m.numpy()).mean() for p, m in zip(predictions, masks)])
    assert accuracy > 0.9, accuracy

    model.save_pretrained(tmp_path / "saved")
    again = resnest_zoo.from_pretrained(tmp_path / "saved", device="cpu")
    for first, second in zip(predictions, again.predict(list(images.permute(0, 2, 3, 1).numpy()))):
        assert np.array_equal(first.labels, second.labels)
        assert second.class_names == CLASSES
        assert np.array_equal(second.palette, np.array(PALETTE, dtype=np.uint8))


@pytest.mark.slow
def test_the_example_fine_tunes_a_published_checkpoint_and_saves_it(published_checkpoint, tmp_path):
    path, _ = published_checkpoint("fcn", "voc")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.link(path, mirror / get_entry("fcn", "voc").filename)
    root = write_pairs(tmp_path / "data", *synthetic_pairs(2))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RESNEST_ZOO_", "HF_HUB_OFFLINE"))}
    environment.update({"RESNEST_ZOO_MIRROR": str(mirror), "RESNEST_ZOO_CACHE": str(tmp_path / "cache"),
                        "RESNEST_ZOO_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "finetune.py"), str(root), "--classes", *CLASSES,
         "--model", "fcn/voc", "--steps", "1", "--batch-size", "2", "--crop", "32", "32", "--workers", "0",
         "--out", str(tmp_path / "model")],
        capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "iteration 1/1  loss" in done.stdout
    model = resnest_zoo.from_pretrained(tmp_path / "model", device="cpu")
    assert model.config.class_names == CLASSES and model.entry is get_entry("fcn", "voc")
