"""``Segmentor.predict``: preprocessing and inference against the reference (sssegmentation) test pipeline.

* Preprocessing is compared with the reference's own ``Resize``/``Normalize``/``ToTensor`` on a real photograph
  (``tests/data``), at the checkpoints' real resize targets, and the OpenCV-style resize is bit-exact with cv2.
* Two ResNeSt-101 entries with different resize targets (shrunk, to stay fast on a CPU) are compared end to end
  with the reference model carrying the same random weights.
* Sliding windows and test-time augmentation are compared with the reference's ``inference``/``auginference``
  methods, run on a tiny stand-in network so that they take milliseconds.
* Inputs, errors, batching and the :class:`Prediction` methods use the tiny network too.
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import resnest_zoo
from resnest_zoo.inference import engine as inference_module
from resnest_zoo.catalogue import catalogue, get_entry
from resnest_zoo.inference.engine import resize_logits_rows, slide_logits, slide_windows
from resnest_zoo.inference.prediction import Prediction
from resnest_zoo.inference.preprocess import keep_ratio_size, normalize, parse_image, resize_like_cv2
from resnest_zoo.models.segmentor import Segmentor, build_segmentor

from conftest import randomize_batchnorm, random_segmentor
from reference import build_reference, reference_logits

PHOTO_PATH = Path(__file__).parent / "data" / "chelsea_160x106.png"
REAL_TARGETS = [(2048, 512), (2048, 1024)]  # VOC/ADE20K and Cityscapes


# ------------------------------------------------------------------------------------------------ helpers
class TinySegmentor(Segmentor):
    """A stand-in with the Segmentor interface: conv (stride 2) + BatchNorm + 1x1 classifier. Records forwards."""

    def __init__(self, config) -> None:
        super().__init__(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                         config.num_classes)
        self.classifier = nn.Conv2d(8, config.num_classes, 1)
        self.config = config
        self.calls: list[tuple[int, ...]] = []

    def decode(self, features):
        return self.classifier(features)

    def forward(self, images):
        self.calls.append(tuple(images.shape))
        return super().forward(images)


@contextmanager
def resize_target(model: Segmentor, target: tuple[int, int]):
    """Temporarily shrink the model's keep-ratio resize target, so that a ResNeSt-101 forward stays cheap."""
    original = model.config
    model.config = replace(original, preprocessing=replace(original.preprocessing, resize=target))
    try:
        yield model
    finally:
        model.config = original


def reference_preprocess(path: Path, target: tuple[int, int], entry) -> torch.Tensor:
    """The reference test pipeline: cv2.imread (BGR) -> Resize(keep_ratio) -> Normalize(to RGB) -> ToTensor."""
    import cv2
    from ssseg.modules.datasets.pipelines import transforms
    image = cv2.imread(str(path))
    sample = {"image": image, "width": image.shape[1], "height": image.shape[0]}
    sample = transforms.Resize(output_size=target, keep_ratio=True, scale_range=None)(sample)
    sample = transforms.Normalize(mean=list(entry.preprocessing.mean), std=list(entry.preprocessing.std))(sample)
    return transforms.ToTensor()(sample)["image"][None]


def our_preprocess(image, target: tuple[int, int], entry) -> torch.Tensor:
    parsed = parse_image(image)
    resized = resize_like_cv2(parsed.pixels, keep_ratio_size(*parsed.size, target))
    return normalize(resized, entry.preprocessing.mean, entry.preprocessing.std)[None]


class ReferenceShim(nn.Module):
    """Lets the reference's ``BaseSegmentor.inference``/``auginference`` drive any of our networks."""

    def __init__(self, model: Segmentor, forward_cfg: dict, scales=(1,), flip=False) -> None:
        super().__init__()
        self.model = model
        self.mode = "TEST"
        self.align_corners = False
        self.cfg = {"num_classes": model.num_classes, "inference": {
            "forward": forward_cfg,
            "tta": {"multiscale": list(scales), "flip": flip, "use_probs_before_resize": False,
                    "fixed_seg_target_pairs": []},
        }}

    def forward(self, inputs):
        return SimpleNamespace(seg_logits=self.model(inputs.images))

    def inference(self, images, forward_args=None):
        from ssseg.modules.models.segmentors import base
        return base.BaseSegmentor.inference(self, images, forward_args)


def reference_tta_probabilities(model: Segmentor, image: torch.Tensor, size, forward_cfg, scales, flip):
    """What the reference's test.py computes: auginference, each path resized to the image, averaged."""
    from ssseg.modules.models.segmentors import base  # the oracle (test extra): missing means failing

    shim = ReferenceShim(model, forward_cfg, scales, flip)
    with torch.no_grad():
        paths = base.BaseSegmentor.auginference(shim, image)
        resized = [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in paths]
        mean = sum(resized) / len(resized)
    return mean[0].softmax(0)


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTO_PATH).convert("RGB"))


TINY_TARGET = (128, 64)  # the photo becomes 64 x 97 (the real VOC target (2048, 512) would give 512 x 773)


@pytest.fixture(scope="session")
def tiny() -> TinySegmentor:
    """The stand-in network on the VOC entry, with a smaller resize target to keep every test in milliseconds."""
    torch.manual_seed(0)
    config = get_entry("deeplabv3", "voc").config
    model = TinySegmentor(replace(config, preprocessing=replace(config.preprocessing, resize=TINY_TARGET)))
    return randomize_batchnorm(model, seed=1).eval()


@pytest.fixture()
def fresh_tiny(tiny) -> TinySegmentor:
    """A private copy (for tests that move, convert or switch the model)."""
    model = TinySegmentor(tiny.config)
    model.load_state_dict(tiny.state_dict())
    return model.eval()


@pytest.fixture(scope="session")
def resnest():
    """Factory (segmentor, dataset) -> ResNeSt-101 segmentor with random weights; each built once."""
    built: dict = {}

    def make(segmentor: str, dataset: str) -> Segmentor:
        if (segmentor, dataset) not in built:
            model = random_segmentor(segmentor, dataset, seed=5)
            with torch.no_grad():  # spread the classifier outputs, so that the labels vary over the photo
                for name, param in model.named_parameters():
                    if name.startswith("decoder.") and param.ndim == 4:
                        param.mul_(4.0)
            built[(segmentor, dataset)] = model
        return built[(segmentor, dataset)]

    return make


# ------------------------------------------------------------------------------------------ preprocessing
SHAPES = [(106, 160), (375, 500), (500, 375), (1024, 2048), (1080, 1920), (300, 451), (1, 1), (7, 3000),
          (512, 512), (333, 777), (2000, 40), (513, 1025)]


@pytest.mark.parametrize("target", REAL_TARGETS)
def test_keep_ratio_size_equals_the_reference_resize(target):
    from ssseg.modules.datasets.pipelines import transforms  # the oracle (test extra)

    resize = transforms.Resize(output_size=target, keep_ratio=True, scale_range=None)
    for height, width in SHAPES:
        sample = resize({"image": np.zeros((height, width, 3), np.uint8)})
        assert keep_ratio_size(height, width, target) == sample["image"].shape[:2], (height, width)


def test_resize_is_bit_exact_with_opencv(photo):
    import cv2  # the reference's resize (a dependency of sssegmentation, in the test extra)

    rng = np.random.default_rng(0)
    cases = [(photo, (512, 773)), (photo, (1024, 1546)), (photo, (53, 80)), (photo, (48, 72))]
    cases += [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), size) for (h, w), size in [
        ((67, 93), (40, 71)), ((31, 17), (97, 3)), ((100, 100), (50, 50)), ((64, 64), (300, 300)),
        ((513, 700), (300, 111)), ((7, 9), (7, 20))]]
    for image, (height, width) in cases:
        expected = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        actual = resize_like_cv2(torch.from_numpy(image.copy()).permute(2, 0, 1), (height, width)).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(actual, expected, err_msg=f"{image.shape} -> {(height, width)}")


@pytest.mark.parametrize("target", REAL_TARGETS)
def test_preprocessed_tensor_equals_the_reference_pipeline(target):
    entry = get_entry("fcn", "voc")
    expected = reference_preprocess(PHOTO_PATH, target, entry)
    actual = our_preprocess(PHOTO_PATH, target, entry)
    assert actual.shape == expected.shape == (1, 3, *keep_ratio_size(106, 160, target))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path, photo):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(photo).save(path, exif=exif, quality=95)
    assert parse_image(path).size == (160, 106)


# ---------------------------------------------------------------------------- end to end vs the reference
@pytest.mark.parametrize("segmentor, dataset, target", [
    ("deeplabv3plus", "cityscapes", (80, 56)),  # -> 53 x 80 (the long side binds)
    ("pspnet", "ade20k", (160, 48)),  # -> 48 x 72 (the short side binds)
])
def test_predict_matches_the_reference_pipeline(resnest, segmentor, dataset, target):
    model = resnest(segmentor, dataset)
    entry = model.entry
    expected_input = reference_preprocess(PHOTO_PATH, target, entry)
    actual_input = our_preprocess(PHOTO_PATH, target, entry)
    torch.testing.assert_close(actual_input, expected_input, rtol=0, atol=1e-6)

    reference = build_reference(entry)
    reference.load_state_dict(model.state_dict())
    with torch.inference_mode():
        expected_logits = reference_logits(reference, expected_input)

    seen = []  # what predict() feeds the network and gets back
    hook = model.register_forward_hook(lambda module, args, output: seen.append((args[0].clone(), output.clone())))
    try:
        with resize_target(model, target):
            prediction = model.predict(PHOTO_PATH)
    finally:
        hook.remove()
    (network_input, actual_logits), = seen
    torch.testing.assert_close(network_input, expected_input, rtol=0, atol=1e-6)
    torch.testing.assert_close(actual_logits, expected_logits, rtol=0, atol=1e-4)
    expected_labels = F.interpolate(expected_logits, size=(106, 160), mode="bilinear", align_corners=False)[0].argmax(0)
    assert prediction.labels.shape == (106, 160) and prediction.labels.dtype == np.uint8
    agreement = (prediction.labels == expected_labels.numpy()).mean()
    assert agreement >= 0.99, agreement
    assert len(np.unique(prediction.labels)) > 1  # a meaningful comparison


@pytest.mark.slow  # the first bfloat16 forward on a busy CPU without bf16 units took up to ~20 s here
def test_bfloat16_agrees_with_float32_on_cpu(resnest):
    model = resnest("deeplabv3plus", "cityscapes")
    with resize_target(model, (48, 32)):  # -> 32 x 48: bf16 convolutions are slow on CPUs without bf16 units
        full = model.predict(PHOTO_PATH)
        half = model.predict(PHOTO_PATH, dtype=torch.bfloat16)
    agreement = (full.labels == half.labels).mean()
    assert agreement >= 0.995, agreement
    assert next(model.parameters()).dtype == torch.float32  # autocast, the weights are untouched


# ------------------------------------------------------------------------------------------------- inputs
def _rgba(photo):
    alpha = np.random.default_rng(0).integers(0, 256, photo.shape[:2], dtype=np.uint8)
    return np.dstack([photo, alpha])


def _grey(photo):
    return np.asarray(Image.fromarray(photo).convert("L"))


def _as_png(image: Image.Image, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    image.save(path)
    return path


# name -> (make input from (photo, tmp_path), the RGB uint8 array it must be read as)
INPUTS = {
    "path str": (lambda p, t: str(PHOTO_PATH), lambda p: p),
    "pathlib.Path": (lambda p, t: PHOTO_PATH, lambda p: p),
    "PIL RGB": (lambda p, t: Image.fromarray(p), lambda p: p),
    "PIL RGBA (alpha discarded)": (lambda p, t: Image.fromarray(_rgba(p), "RGBA"), lambda p: p),
    "RGBA png file": (lambda p, t: _as_png(Image.fromarray(_rgba(p), "RGBA"), t, "rgba.png"), lambda p: p),
    "PIL P": (lambda p, t: Image.fromarray(p).quantize(64),
              lambda p: np.asarray(Image.fromarray(p).quantize(64).convert("RGB"))),
    "PIL L": (lambda p, t: Image.fromarray(_grey(p)), lambda p: np.repeat(_grey(p)[:, :, None], 3, 2)),
    "PIL LA": (lambda p, t: Image.fromarray(_grey(p)).convert("LA"), lambda p: np.repeat(_grey(p)[:, :, None], 3, 2)),
    "PIL I;16": (lambda p, t: Image.fromarray(_grey(p).astype(np.uint16) * 257),
                 lambda p: np.repeat(_grey(p)[:, :, None], 3, 2)),
    "numpy HxWx3 uint8": (lambda p, t: p.copy(), lambda p: p),
    "numpy HxWx4 uint8": (lambda p, t: _rgba(p), lambda p: p),
    "numpy HxW uint8": (lambda p, t: _grey(p), lambda p: np.repeat(_grey(p)[:, :, None], 3, 2)),
    "numpy HxWx1 uint8": (lambda p, t: _grey(p)[:, :, None], lambda p: np.repeat(_grey(p)[:, :, None], 3, 2)),
    "numpy float32 [0,1]": (lambda p, t: p.astype(np.float32) / 255, lambda p: p),
    "numpy float64 [0,1]": (lambda p, t: p / 255.0, lambda p: p),
    "tensor CHW uint8": (lambda p, t: torch.from_numpy(p.copy()).permute(2, 0, 1), lambda p: p),
    "tensor HWC uint8": (lambda p, t: torch.from_numpy(p.copy()), lambda p: p),
    "tensor CHW float": (lambda p, t: torch.from_numpy(p.copy()).permute(2, 0, 1).float() / 255, lambda p: p),
    "tensor HWC float16": (lambda p, t: (torch.from_numpy(p.copy()).half() / 255), lambda p: p),
    "tensor HxW uint8": (lambda p, t: torch.from_numpy(_grey(p).copy()), lambda p: np.repeat(_grey(p)[:, :, None], 3, 2)),
    "tensor 4xHxW (alpha discarded)": (lambda p, t: torch.from_numpy(_rgba(p)).permute(2, 0, 1), lambda p: p),
}


@pytest.mark.parametrize("name", list(INPUTS))
def test_every_input_type_reads_as_the_same_picture(tiny, photo, tmp_path, name):
    make, expected_rgb = INPUTS[name]
    image = make(photo, tmp_path)
    expected = expected_rgb(photo)
    np.testing.assert_array_equal(parse_image(image).pixels.permute(1, 2, 0).numpy(), expected)
    prediction = tiny.predict(image)
    assert isinstance(prediction, Prediction)
    np.testing.assert_array_equal(prediction.image, expected)
    np.testing.assert_array_equal(prediction.labels, tiny.predict(expected).labels)


def test_all_input_types_in_one_batch(tiny, photo, tmp_path):
    images = [make(photo, tmp_path) for make, _ in INPUTS.values()]
    results = tiny.predict(images, batch_size=5)
    assert isinstance(results, list) and len(results) == len(images)
    expected: dict[bytes, np.ndarray] = {}
    for (name, (_, expected_rgb)), result in zip(INPUTS.items(), results):
        picture = expected_rgb(photo)
        key = picture.tobytes()
        if key not in expected:
            expected[key] = tiny.predict(picture).labels
        np.testing.assert_array_equal(result.labels, expected[key], err_msg=name)


def _bad_float(value):
    array = np.full((8, 8, 3), 0.5, np.float32)
    array[2, 3, 1] = value
    return array


REJECTED = {
    "numpy 4-D": (np.zeros((2, 8, 8, 3), np.uint8), ValueError, "list"),
    "numpy 1-D": (np.zeros(8, np.uint8), ValueError, "1 dimensions"),
    "numpy 2 channels": (np.zeros((8, 8, 2), np.uint8), ValueError, "got 2"),
    "numpy channels first": (np.zeros((3, 8, 9), np.uint8), ValueError, "transpose"),
    "numpy empty": (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
    "numpy NaN": (_bad_float(np.nan), ValueError, "NaN"),
    "numpy inf": (_bad_float(np.inf), ValueError, "infinite"),
    "numpy float 0-255": (np.full((8, 8, 3), 200.0), ValueError, "[0, 1]"),
    "numpy negative float": (_bad_float(-0.1), ValueError, "[0, 1]"),
    "numpy complex": (np.zeros((8, 8, 3), np.complex64), TypeError, "complex64"),
    "numpy bool": (np.zeros((8, 8, 3), bool), TypeError, "bool"),
    "numpy int64": (np.zeros((8, 8, 3), np.int64), TypeError, "astype(np.uint8)"),
    "numpy uint16": (np.zeros((8, 8, 3), np.uint16), TypeError, "uint16"),
    "tensor 5-D": (torch.zeros(1, 1, 3, 8, 8), ValueError, "5 dimensions"),
    "tensor 1-D": (torch.zeros(8), ValueError, "1 dimensions"),
    "tensor 2 channels": (torch.zeros(2, 8, 2), ValueError, "C = 1, 3 or 4"),
    "tensor NCHW 5 channels": (torch.zeros(2, 5, 8, 8), ValueError, "N x C x H x W"),
    "tensor empty": (torch.zeros(3, 0, 8), ValueError, "empty"),
    "tensor bool": (torch.zeros(3, 8, 8, dtype=torch.bool), TypeError, "torch.bool"),
    "tensor int32": (torch.zeros(3, 8, 8, dtype=torch.int32), TypeError, "to(torch.uint8)"),
    "tensor complex": (torch.zeros(3, 8, 8, dtype=torch.complex64), TypeError, "complex64"),
    "tensor NaN": (torch.full((3, 8, 8), float("nan")), ValueError, "NaN"),
    "tensor float 0-255": (torch.full((3, 8, 8), 128.0), ValueError, "[0, 1]"),
    "int": (5, TypeError, "cannot read an image from a builtins.int"),
    "dict": ({"image": 1}, TypeError, "expected an image file path"),
    "bytes": (b"\x89PNG", TypeError, "builtins.bytes"),
    "nested list": ([[np.zeros((8, 8, 3), np.uint8)]], ValueError, "nested"),
    "bad item in list": ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 2), np.uint8)], ValueError, "item 1"),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_rejected_inputs_say_what_was_received(tiny, name):
    image, error, fragment = REJECTED[name]
    with pytest.raises(error) as caught:
        tiny.predict(image)
    assert fragment in str(caught.value)


def test_files_that_are_not_images(tiny, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(ValueError, match="notes.txt.*not an image"):
        tiny.predict(text)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        tiny.predict(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="is a folder, not an image file"):
        tiny.predict(tmp_path)


@pytest.mark.parametrize("options, fragment", [
    ({"mode": "fast"}, "mode must be"),
    ({"crop_size": 256}, "only apply to mode='slide'"),
    ({"mode": "slide", "crop_size": 64, "stride": 65}, "larger than crop_size"),
    ({"mode": "slide", "crop_size": (64, 0)}, "positive"),
    ({"mode": "slide", "stride": "big"}, "pair of ints"),
    ({"scales": ()}, "non-empty"),
    ({"scales": 1.0}, "non-empty"),
    ({"scales": (1.0, 0)}, "positive finite"),
    ({"batch_size": 0}, "batch_size"),
    ({"dtype": torch.float64}, "dtype must be"),
    ({"dtype": torch.int8}, "dtype must be"),
])
def test_rejected_options(tiny, photo, options, fragment):
    with pytest.raises(ValueError, match=None) as caught:
        tiny.predict(photo, **options)
    assert fragment in str(caught.value)


def test_flip_must_be_a_bool(tiny, photo):
    with pytest.raises(TypeError, match="flip"):
        tiny.predict(photo, flip="yes")


def test_model_without_config_says_how_to_fix(fresh_tiny, photo):
    fresh_tiny.config = None
    with pytest.raises(ValueError, match="get_entry"):
        fresh_tiny.predict(photo)


# ------------------------------------------------------------------------------------- batches and modes
def test_batches_equal_single_predictions(tiny, photo):
    images = [photo, photo[:, ::-1], photo[10:90, 20:150], photo[::2, ::2]]
    tiny.calls.clear()
    batched = tiny.predict(images, batch_size=2, probabilities=True)
    sizes = [call[0] for call in tiny.calls]
    assert sizes == [2, 1, 1]  # first chunk: two equal-size images share one forward pass
    for image, result in zip(images, batched):
        single = tiny.predict(np.ascontiguousarray(image), probabilities=True)
        np.testing.assert_array_equal(result.labels, single.labels)
        np.testing.assert_allclose(result.probabilities, single.probabilities, rtol=0, atol=1e-5)

    stacked = torch.from_numpy(np.stack([photo, photo[::-1]])).permute(0, 3, 1, 2)  # NCHW uint8
    tiny.calls.clear()
    results = tiny.predict(stacked)
    assert [call[0] for call in tiny.calls] == [2]
    assert isinstance(results, list) and len(results) == 2
    np.testing.assert_array_equal(results[1].labels, tiny.predict(np.ascontiguousarray(photo[::-1])).labels)
    assert tiny.predict(tuple(images[:1]))[0].labels.shape == (106, 160)
    assert tiny.predict([]) == []


def test_slide_runs_windows_in_batches_and_matches_the_reference(tiny, photo):
    entry = tiny.config
    image = our_preprocess(photo, entry.preprocessing.resize, entry)  # 64 x 97
    crop, stride = (24, 32), (18, 24)
    boxes = slide_windows(64, 97, crop, stride)
    assert len(boxes) == 4 * 4 and all((b - t, r - l) == crop for t, b, l, r in boxes)

    tiny.calls.clear()
    prediction = tiny.predict(photo, mode="slide", crop_size=crop, stride=stride, batch_size=6, probabilities=True)
    assert [call[0] for call in tiny.calls] == [6, 6, 4]
    assert all(call[2:] == crop for call in tiny.calls)

    forward_cfg = {"mode": "slide", "cropsize": crop, "stride": stride}
    with torch.no_grad():
        expected_logits = ReferenceShim(tiny, forward_cfg).inference(image)
        actual_logits = slide_logits(tiny, image, crop, stride, entry.num_classes, batch_size=6)
    torch.testing.assert_close(actual_logits, expected_logits, rtol=0, atol=1e-5)
    expected = reference_tta_probabilities(tiny, image, (106, 160), forward_cfg, (1,), False)
    np.testing.assert_allclose(prediction.probabilities, expected.numpy(), rtol=0, atol=1e-5)
    assert (prediction.labels == expected.argmax(0).numpy()).mean() >= 0.999


def test_slide_defaults_and_single_window_equals_whole(tiny, photo):
    with resize_target(tiny, (2048, 512)):  # the real VOC target: 512 x 773
        whole = tiny.predict(photo)
        tiny.calls.clear()
        slide = tiny.predict(photo, mode="slide")  # default crop 512 x 512, stride 341: 2 windows in one batch
        assert tiny.calls == [(2, 3, 512, 512)]
    assert (slide.labels == whole.labels).mean() > 0.95
    one_window = tiny.predict(photo, mode="slide", crop_size=(600, 800))
    np.testing.assert_array_equal(one_window.labels, tiny.predict(photo).labels)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_test_time_augmentation_matches_the_reference(tiny, photo, mode):
    entry = tiny.config
    image = our_preprocess(photo, entry.preprocessing.resize, entry)
    scales = (0.75, 1.0, 1.25)
    forward_cfg = {"mode": "whole", "cropsize": None, "stride": None}
    options = {}
    if mode == "slide":
        scales = (0.75, 1.25)
        forward_cfg = {"mode": "slide", "cropsize": (40, 40), "stride": (26, 26)}
        options = {"crop_size": 40, "stride": 26}
    tiny.calls.clear()
    prediction = tiny.predict(photo, mode=mode, scales=scales, flip=True, probabilities=True, **options)
    if mode == "whole":
        assert len(tiny.calls) == 6
    expected = reference_tta_probabilities(tiny, image, (106, 160), forward_cfg, scales, True)
    np.testing.assert_allclose(prediction.probabilities, expected.numpy(), rtol=0, atol=1e-5)
    assert (prediction.labels == expected.argmax(0).numpy()).mean() >= 0.999
    plain = tiny.predict(photo)
    assert (prediction.labels != plain.labels).any()  # the augmentation did something


def test_resize_logits_rows_equals_one_interpolation(monkeypatch):
    monkeypatch.setattr(inference_module, "_BAND_ELEMENTS", 5 * 4 * 31)  # force bands of 4 rows
    logits = torch.randn(5, 7, 9, generator=torch.Generator().manual_seed(0))
    for size in [(23, 31), (3, 4), (7, 9), (14, 5)]:
        bands = list(resize_logits_rows(logits, size))
        assert bands[0][0] == 0 and bands[-1][1] == size[0]
        actual = torch.cat([band for _, _, band in bands], dim=1)
        expected = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ devices and dtypes
def test_device_dtype_and_training_mode(fresh_tiny, photo):
    reference = fresh_tiny.predict(photo)
    fresh_tiny.train()
    again = fresh_tiny.predict(photo, device="cpu")
    assert fresh_tiny.training  # restored after the call
    np.testing.assert_array_equal(again.labels, reference.labels)  # but BatchNorm used its running statistics
    for dtype in (torch.bfloat16, torch.float16):
        low = fresh_tiny.predict(photo, dtype=dtype)
        assert (low.labels == reference.labels).mean() >= 0.995, dtype
    assert next(fresh_tiny.parameters()).dtype == torch.float32


def test_channels_last(fresh_tiny, photo):
    expected = fresh_tiny.predict(photo)
    actual = fresh_tiny.predict(photo, channels_last=True)
    assert fresh_tiny.backbone_net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert (actual.labels == expected.labels).mean() > 0.999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_moves_the_model_once_and_agrees_with_cpu(fresh_tiny, photo):
    expected = fresh_tiny.predict(photo)
    actual = fresh_tiny.predict(torch.from_numpy(photo.copy()).cuda(), device="cuda")
    assert next(fresh_tiny.parameters()).is_cuda
    assert (actual.labels == expected.labels).mean() > 0.999


# ------------------------------------------------------------------------------------------- Prediction
def test_prediction_methods(tiny, photo, tmp_path):
    prediction = tiny.predict(PHOTO_PATH)
    entry = tiny.config
    assert prediction.labels.dtype == np.uint8 and prediction.labels.shape == (106, 160)
    assert prediction.class_names == entry.class_names
    assert prediction.palette.dtype == np.uint8 and prediction.palette.shape == (entry.num_classes, 3)
    assert prediction.probabilities is None
    np.testing.assert_array_equal(prediction.image, photo)

    path = prediction.save(tmp_path / "mask.png")
    with Image.open(path) as reopened:
        assert reopened.mode == "P"
        np.testing.assert_array_equal(np.asarray(reopened), prediction.labels)
        palette = np.asarray(reopened.getpalette()[:3 * entry.num_classes], np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(palette, prediction.palette)
    with pytest.raises(ValueError, match=".png"):
        prediction.save(tmp_path / "mask.jpg")

    colours = prediction.colorize()
    assert colours.mode == "RGB" and colours.size == (160, 106)
    np.testing.assert_array_equal(np.asarray(colours), prediction.palette[prediction.labels])
    assert prediction.overlay().size == (160, 106)
    np.testing.assert_array_equal(np.asarray(prediction.overlay(alpha=0.0)), photo)
    np.testing.assert_array_equal(np.asarray(prediction.overlay(alpha=1.0)), np.asarray(colours))
    with pytest.raises(ValueError, match="alpha"):
        prediction.overlay(alpha=1.5)

    summary = prediction.summary()
    fractions = [fraction for _, fraction in summary]
    assert fractions == sorted(fractions, reverse=True) and all(f > 0 for f in fractions)
    assert sum(fractions) == pytest.approx(1.0) and sum(fractions) <= 1.0 + 1e-9
    assert {name for name, _ in summary} == {entry.class_names[i] for i in np.unique(prediction.labels)}
    text = repr(prediction)
    assert text.startswith("Prediction(160x106 px, 21 classes") and summary[0][0] in text

    png = prediction._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(png)).size == (160, 106)

    with_probs = tiny.predict(PHOTO_PATH, probabilities=True)
    assert with_probs.probabilities.shape == (21, 106, 160) and with_probs.probabilities.dtype == np.float32
    np.testing.assert_allclose(with_probs.probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(with_probs.probabilities.argmax(0), prediction.labels)


def test_prediction_with_many_classes_cannot_be_an_indexed_png(tmp_path):
    names = [f"class {i}" for i in range(300)]
    labels = np.arange(12, dtype=np.int64).reshape(3, 4) * 25
    prediction = Prediction(labels, names, np.zeros((300, 3), np.uint8))
    assert prediction.summary()[0][1] == pytest.approx(1 / 12)
    with pytest.raises(ValueError, match="256"):
        prediction.save(tmp_path / "mask.png")
    with pytest.raises(ValueError, match="no input image"):
        prediction.overlay()
    assert prediction._repr_png_().startswith(b"\x89PNG")


def test_a_prediction_saved_and_read_back_is_the_same_prediction(tiny, photo, tmp_path):
    prediction = tiny.predict(photo)
    saved = prediction.save(tmp_path / "mask.png")
    with Image.open(saved) as image:
        assert image.mode == "P" and np.array_equal(np.asarray(image), prediction.labels)
        assert np.array_equal(np.asarray(image.getpalette()[:3 * prediction.num_classes]).reshape(-1, 3),
                              prediction.palette)


# ---------------------------------------------------------------------------------------- all 12 entries
@pytest.mark.slow
def test_predict_works_for_every_catalogue_entry(photo):
    small = np.ascontiguousarray(photo[:48, :64])
    for entry in catalogue().values():
        torch.manual_seed(0)
        model = build_segmentor(entry)
        with resize_target(model, (48, 32)):  # -> 32 x 43
            prediction = model.predict(small)
        assert prediction.labels.shape == (48, 64) and prediction.labels.dtype == np.uint8, entry.name
        assert int(prediction.labels.max()) < entry.num_classes
        assert prediction.class_names == entry.class_names and len(prediction.palette) == entry.num_classes


# ------------------------------------------------------------------------ issue 10: misuse, clearly refused
def test_a_picture_one_pixel_thin_is_predicted(tiny):
    """A 1 x 5000 picture: the keep-ratio resize would give it 0 rows; it keeps 1 (the reference fails here)."""
    assert keep_ratio_size(1, 5000, (2048, 512)) == (1, 2048)
    assert keep_ratio_size(5000, 1, (2048, 512)) == (2048, 1)
    for shape in ((1, 5000, 3), (5000, 1, 3)):
        prediction = tiny.predict(np.zeros(shape, np.uint8))
        assert prediction.labels.shape == shape[:2]


@pytest.mark.slow
def test_a_picture_one_pixel_thin_runs_through_resnest(resnest):
    model = resnest("deeplabv3plus", "cityscapes")  # resize target 2048 x 1024: the picture becomes 1 x 2048
    prediction = model.predict(np.full((1, 5000, 3), 128, np.uint8))
    assert prediction.labels.shape == (1, 5000) and int(prediction.labels.max()) < 19


def test_every_error_in_a_batch_names_the_item(tiny, photo, tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=rf"item 1 of the batch \('{missing}'\)"):
        tiny.predict([photo, missing])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(ValueError, match=r"item 2 of the batch \('.*notes.txt'\): .*not an image"):
        tiny.predict([photo, photo, str(notes)])
    batch = torch.rand(3, 3, 8, 8)
    batch[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="item 2 of the batch: .*NaN"):
        tiny.predict(batch)
    with pytest.raises(ValueError, match="item 0 of the batch: it is itself a batch"):
        tiny.predict([[photo]])


def test_an_error_after_reading_names_the_item(fresh_tiny, photo, tmp_path, monkeypatch):
    odd = tmp_path / "odd.png"
    Image.fromarray(photo[:, :77]).save(odd)
    real_preprocess = inference_module.preprocess

    def preprocess(image, preprocessing):  # fails for the 77-pixel-wide picture only, after every input was read
        if image.shape[2] == 77:
            raise ValueError("cannot resize this one")
        return real_preprocess(image, preprocessing)

    monkeypatch.setattr(inference_module, "preprocess", preprocess)
    with pytest.raises(ValueError, match=rf"^item 1 of the batch \('{odd}'\): cannot resize this one$"):
        fresh_tiny.predict([photo, odd])

    def forward(images):  # a failing forward pass shared by two equal-size pictures names both
        raise RuntimeError("out of memory")

    monkeypatch.setattr(fresh_tiny, "forward", forward)
    with pytest.raises(RuntimeError, match=r"^items 0, 1 of the batch: out of memory$"):
        fresh_tiny.predict([photo, photo])
    with pytest.raises(RuntimeError, match=r"^out of memory$"):  # a single picture: nothing to name
        fresh_tiny.predict(photo)


def test_a_device_that_is_not_there_is_refused_and_the_model_stays(fresh_tiny, photo, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(resnest_zoo.DeviceNotAvailableError, match="no CUDA device is available.*found here: cpu"):
        fresh_tiny.predict(photo, device="cuda")
    with pytest.raises(resnest_zoo.DeviceNotAvailableError, match="'gpu' is not a device name"):
        fresh_tiny.predict(photo, device="gpu")
    assert next(fresh_tiny.parameters()).device.type == "cpu"


def _raw_png_16bit(path: Path, grey: np.ndarray) -> Path:
    """A 16-bit greyscale PNG written byte by byte (no Pillow), so that the file is what a scanner would write."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width = grey.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in grey)  # filter type 0 per row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_a_16_bit_png_file_keeps_its_grey_levels(tiny, tmp_path):
    gradient = np.tile(np.linspace(0, 65535, 96).round().astype(np.uint16), (24, 1))
    path = _raw_png_16bit(tmp_path / "gradient16.png", gradient)
    expected = np.repeat((gradient >> 8).astype(np.uint8)[:, :, None], 3, axis=2)  # the high byte, as cv2.imread
    for image in (path, str(path), Image.open(path)):
        np.testing.assert_array_equal(parse_image(image).pixels.permute(1, 2, 0).numpy(), expected)
    np.testing.assert_array_equal(tiny.predict(path).image, expected)


def test_the_pillow_requirement_reads_16_bit_pngs():
    """Pillow opens 16-bit greyscale PNGs as I;16 from 10.3 on (python-pillow/Pillow#7849)."""
    import re

    from packaging.requirements import Requirement

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    pillow = Requirement(re.search(r'^\s*"([Pp]illow\b[^"]*)"', pyproject, flags=re.M).group(1))
    assert "10.2.1" not in pillow.specifier and "10.3.0" in pillow.specifier


@pytest.fixture
def fresh_half_precision_warnings(monkeypatch):
    """Forget the warnings already given in this process, and make the CPU's native dtypes what a test says."""
    from resnest_zoo import devices

    monkeypatch.setattr(devices, "_warned", set())

    def native(*dtypes: torch.dtype) -> None:
        monkeypatch.setattr(devices, "native_half_precision",
                            lambda device, dtype: dtype == torch.float32 or dtype in dtypes)

    return native


def test_emulated_half_precision_warns_once_with_the_slowdown(fresh_tiny, photo, fresh_half_precision_warnings):
    import warnings

    fresh_half_precision_warnings()  # a CPU with neither bfloat16 nor float16 units
    with pytest.warns(UserWarning, match="no native bfloat16 arithmetic.*about 7 times slower than float32; "
                                         "float32 is the fastest here") as caught:
        fresh_tiny.predict(photo, dtype=torch.bfloat16)
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the caller's line
    with pytest.warns(UserWarning, match="no native float16.*more than 70 times slower"):
        fresh_tiny.predict(photo, dtype=torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the second call is silent
        fresh_tiny.predict(photo, dtype=torch.bfloat16)


def test_float16_on_a_cpu_with_native_bfloat16_suggests_bfloat16(fresh_tiny, photo, fresh_half_precision_warnings):
    import warnings

    fresh_half_precision_warnings(torch.bfloat16)
    with pytest.warns(UserWarning, match="no native float16 .*this CPU has native bfloat16: use bfloat16 instead"):
        fresh_tiny.predict(photo, dtype=torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning
        fresh_tiny.predict(photo, dtype=torch.bfloat16)
