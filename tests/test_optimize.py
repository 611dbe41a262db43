"""Inference optimisations: BatchNorm folding, channels_last, the fused split-attention and dilated depthwise
forwards, reduced-precision labels, and the inference benchmark script (run end to end on a tiny input)."""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnest_zoo.models.backbone import ResNeStBottleneck, SplitAttentionConv2d, _shortcut
from resnest_zoo.catalogue import get_entry
from resnest_zoo.models.strict import load_into
from resnest_zoo.errors import CheckpointMismatchError
from resnest_zoo.models.heads import _dilated_depthwise_conv3x3
from resnest_zoo.models.optimize import fold_batchnorms, optimize_for_inference
from resnest_zoo.models.segmentor import build_segmentor

from conftest import REPO_ROOT, randomize_batchnorm, random_segmentor

DATA = Path(__file__).resolve().parent / "data"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_inference", REPO_ROOT / "benchmarks" / "bench_inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="session")
def models():
    """{head: (original, folded)} built once: random weights, non-trivial BatchNorm statistics."""
    made = {}

    def get(segmentor: str, dataset: str):
        if segmentor not in made:
            original = random_segmentor(segmentor, dataset, seed=5, auxiliary_head=True)
            made[segmentor] = (original, optimize_for_inference(copy.deepcopy(original)))
        return made[segmentor]

    return get


@pytest.fixture(scope="session")
def image96():
    """A smooth natural-looking image: a photo from tests/data if one is there, else the benchmark's synthetic one."""
    photos = sorted(p for p in DATA.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}) if DATA.is_dir() else []
    if photos:
        import numpy as np
        from PIL import Image

        image = Image.open(photos[0]).convert("RGB").resize((96, 96), Image.BILINEAR)
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        return ((tensor - mean) / std).unsqueeze(0)
    return _bench_module().natural_looking_image(96, 96, seed=1)


@pytest.mark.parametrize("segmentor, dataset", [("deeplabv3plus", "ade20k"), ("pspnet", "voc")])
def test_folding_is_exact(models, segmentor, dataset):
    original, folded = models(segmentor, dataset)
    images = torch.randn(1, 3, 64, 72, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        features, folded_features = original.backbone_net(images), folded.backbone_net(images)
        assert _relative_error(folded.decode(folded_features), original.decode(features)) <= 1e-4
        aux = original.auxiliary_decoder(features[2])
        assert _relative_error(folded.auxiliary_decoder(folded_features[2]), aux) <= 1e-4


@pytest.mark.parametrize("segmentor", ["fcn", "pspnet", "deeplabv3", "deeplabv3plus"])
def test_folding_removes_every_batchnorm(segmentor):
    with torch.device("meta"):
        model = build_segmentor(get_entry(segmentor, "voc"), auxiliary_head=True)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorms(model) == batchnorms > 100
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))  # all took a BatchNorm's shift
    assert model.batchnorm_folded is True


def test_folding_is_idempotent(models):
    _, folded = models("deeplabv3plus", "ade20k")
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = folded(images)
        again = optimize_for_inference(folded)
        assert again is folded
        assert fold_batchnorms(folded) == 0
        torch.testing.assert_close(folded(images), before, rtol=0, atol=0)


def test_folding_refuses_train_mode():
    block = ResNeStBottleneck(64, 16, downsample=_shortcut(64, 64, 1))
    with pytest.raises(RuntimeError, match=r"training mode.*model\.eval\(\)"):
        optimize_for_inference(block.train())
    block.eval().conv2.bn1.train()  # one stray training BatchNorm is enough to refuse
    with pytest.raises(RuntimeError, match="conv2.bn1"):
        optimize_for_inference(block)
    assert any(isinstance(m, nn.BatchNorm2d) for m in block.modules())  # nothing was folded


def test_folded_model_refuses_published_checkpoints(models):
    original, folded = models("deeplabv3plus", "ade20k")
    assert not hasattr(original, "batchnorm_folded")
    assert set(folded.state_dict()) != set(original.state_dict())
    with pytest.raises(CheckpointMismatchError, match="folded"):
        folded.load_state_dict(original.state_dict())
    with pytest.raises(CheckpointMismatchError, match="folded"):
        load_into(folded, original.state_dict())


@pytest.mark.parametrize("segmentor, dataset", [("deeplabv3plus", "ade20k"), ("pspnet", "voc")])
def test_channels_last_gives_the_same_logits(models, segmentor, dataset):
    _, folded = models(segmentor, dataset)
    nhwc = optimize_for_inference(copy.deepcopy(folded), channels_last=True)
    images = torch.randn(1, 3, 72, 88, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = folded(images)
        actual = nhwc(images.contiguous(memory_format=torch.channels_last))
    assert actual.shape == expected.shape
    assert _relative_error(actual, expected) <= 1e-4


def _plain_split_attention(module: SplitAttentionConv2d, x: torch.Tensor) -> torch.Tensor:
    """The straightforward formula, as sssegmentation writes it."""
    x = F.relu(module.bn0(module.conv(x)))
    n, radix = x.shape[0], module.radix
    splits = x.view(n, radix, -1, *x.shape[2:])
    gap = F.adaptive_avg_pool2d(splits.sum(dim=1), 1)
    atten = module.fc2(F.relu(module.bn1(module.fc1(gap))))
    atten = F.softmax(atten.view(n, module.groups, radix, -1).transpose(1, 2), dim=1).reshape(n, -1)
    attens = atten.view(n, radix, -1, 1, 1)
    return torch.sum(attens * splits, dim=1)


@pytest.mark.parametrize("radix, groups", [(2, 1), (1, 1), (4, 1), (2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_split_attention_matches_the_plain_formula(radix, groups, channels_last):
    torch.manual_seed(radix * 10 + groups)
    module = randomize_batchnorm(SplitAttentionConv2d(16, 16, dilation=2, radix=radix, groups=groups), seed=3).eval()
    x = torch.randn(2, 16, 11, 13)
    if channels_last:
        module, x = module.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = _plain_split_attention(module, x)
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(module.attention(module.relu(module.bn0(module.conv(x))).view(2, radix, 16, 11, 13)),
                                   _attention_weights(module, x), rtol=1e-5, atol=1e-6)
        folded = optimize_for_inference(copy.deepcopy(module))
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)


def _attention_weights(module: SplitAttentionConv2d, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(module.bn0(module.conv(x)))
    n = x.shape[0]
    gap = F.adaptive_avg_pool2d(x.view(n, module.radix, -1, *x.shape[2:]).sum(dim=1), 1)
    atten = module.fc2(F.relu(module.bn1(module.fc1(gap))))
    return F.softmax(atten.view(n, module.groups, module.radix, -1).transpose(1, 2), dim=1).reshape(n, module.radix, -1, 1, 1)


def test_striding_bottleneck_matches_the_plain_formula():
    """The stride-2 block: split attention at stride 1, then the 3x3 average pool; average-pooled shortcut."""
    torch.manual_seed(0)
    block = randomize_batchnorm(ResNeStBottleneck(32, 16, stride=2, downsample=_shortcut(32, 64, 2)), seed=4).eval()
    x = torch.randn(2, 32, 15, 18)
    with torch.inference_mode():
        out = F.relu(block.bn1(block.conv1(x)))
        out = block.avg_layer(_plain_split_attention(block.conv2, out))
        expected = F.relu(block.bn3(block.conv3(out)) + block.downsample(x))
        assert expected.shape == (2, 64, 8, 9)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
        folded = optimize_for_inference(copy.deepcopy(block))
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dilation", [1, 2, 5, 12, 40])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dilated_depthwise_conv_matches_conv2d(dilation, channels_last):
    torch.manual_seed(dilation)
    x, weight, bias = torch.randn(2, 8, 21, 30), torch.randn(8, 1, 3, 3), torch.randn(8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation, groups=8)
    actual = _dilated_depthwise_conv3x3(x, weight, bias, dilation)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert actual.is_contiguous(memory_format=torch.channels_last) == channels_last
    low = _dilated_depthwise_conv3x3(x.bfloat16(), weight, None, dilation)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected - bias.view(1, -1, 1, 1), rtol=0.05, atol=0.1)


def test_bfloat16_autocast_labels_agree_with_float32(models, image96):
    """bf16 autocast on the folded channels_last model (the fast reduced-precision path) changes few labels.

    Without a photo in tests/data the image is the benchmark's smooth synthetic scene; the weights are random, so
    logit margins are smaller than a trained model's and this is a pessimistic check.
    """
    _, folded = models("deeplabv3plus", "ade20k")
    nhwc = optimize_for_inference(copy.deepcopy(folded), channels_last=True)
    images = image96.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = folded(image96).argmax(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = nhwc(images)
    agreement = float((logits.float().argmax(1) == expected).float().mean())
    assert agreement >= 0.995, agreement


@pytest.mark.slow
def test_benchmark_script_writes_json(tmp_path, monkeypatch):
    output = tmp_path / "results.json"
    bench = _bench_module()
    measure = bench.measure_peaks  # at least ~1.5 s of work per size: a smaller budget keeps the test short
    monkeypatch.setattr(bench, "measure_peaks", lambda device, dtype, sizes, budget_s=1.5: measure(device, dtype, sizes, 0.05))
    assert bench.main(["--sizes", "64x64", "--heads", "fcn", "--repeats", "1", "--no-reference", "--dtypes", "float32",
                       "--channels-last", "on", "--backends", "torch,onnxruntime", "--peak-sizes", "256,384",
                       "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["machine"]["peak_gflops_matmul"]["float32"] > 0
    idle = report["machine"]["idle_peaks"]["float32"]
    assert idle["size"] in (256, 384) and set(idle["by_size"]) >= {f"{idle['how']} 256", f"{idle['how']} 384"}
    (case,) = report["cases"]
    assert (case["segmentor"], case["height"], case["width"]) == ("fcn", 64, 64)
    assert case["gflop_per_forward"] > 1
    names = [row["variant"] for row in case["variants"]]
    assert names == ["plain", "folded float32 channels_last", "onnxruntime float32"]
    for row in case["variants"]:
        assert row["median_s"] > 0 and row["achieved_gflops"] > 0 and row["peak_memory_mb"] > 0
        assert row["vs_ref"] is None


def test_load_with_optimize_folds_and_gives_the_same_logits(published_checkpoint):
    import resnest_zoo

    path, model = published_checkpoint("fcn", "voc")
    fast = resnest_zoo.load("fcn", "voc", weights=path, device="cpu", optimize=True)
    assert fast.batchnorm_folded and not fast.training
    images = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert _relative_error(fast(images), model(images)) <= 1e-4
