"""``model.predict_stream`` and the shared loader: the same label maps as ``model.predict``, in input order, on a
mixed folder (sizes, modes, an EXIF-rotated JPEG, nested folders, a bad file); every kind of bad input named."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnest_zoo.errors import ImageReadError
from resnest_zoo.inference.inputs import collect_inputs
from resnest_zoo.inference.loader import LoadedImage, ShapeBatcher
from resnest_zoo.inference.preprocess import read_image

from synthetic_data import ColourSegmentor


def _picture(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    image[height // 4: height // 2, width // 3: width // 2] = rng.integers(0, 255, 3)
    return image.astype(np.uint8)


def write_mixed_folder(folder: Path) -> list[Path]:
    """Pictures of several sizes and modes (RGB, greyscale, RGBA, palette, an EXIF-rotated JPEG) in nested folders,
    plus one file that is not an image (``zz_broken.jpg``, last in sorted order); the pictures, sorted."""
    (folder / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(_picture(96, 64, 0)).save(folder / "a_rgb.png")
    Image.fromarray(_picture(64, 96, 1)[:, :, 0]).save(folder / "b_grey.png")
    Image.fromarray(np.dstack([_picture(80, 60, 2), np.full((60, 80), 128, np.uint8)])).save(folder / "c_rgba.png")
    Image.fromarray(_picture(96, 64, 3)).convert("P").save(folder / "nested" / "d_palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(_picture(120, 80, 4)).save(folder / "nested" / "deeper" / "e_rotated.JPG", exif=exif, quality=95)
    Image.fromarray(_picture(96, 64, 5)).save(folder / "nested" / "f_same_size.jpg", quality=90)
    (folder / "zz_broken.jpg").write_bytes(b"not a JPEG at all")
    (folder / "notes.txt").write_text("not an image, not an image suffix: never an input")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg") and p.name != "zz_broken.jpg")


def test_stream_equals_predict_image_by_image_in_input_order(tmp_path):
    pictures = write_mixed_folder(tmp_path / "in")
    model = ColourSegmentor("voc", resize=(96, 64))
    stream = model.predict_stream(tmp_path / "in", batch_size=3, workers=2)
    received = []
    with pytest.raises(ImageReadError, match=r"zz_broken\.jpg: not an image"):
        for prediction in stream:
            received.append(prediction)
    order = [item.path for item in collect_inputs([tmp_path / "in"])]
    assert order[:-1] == [p for p in order if p.name != "zz_broken.jpg"] and order[-1].name == "zz_broken.jpg"
    assert len(received) == len(pictures) == 6
    for path, prediction in zip(order, received):
        expected = model.predict(path)
        assert np.array_equal(prediction.labels, expected.labels), path
        assert np.array_equal(prediction.image, expected.image), path
    rotated = received[[p.name for p in order].index("e_rotated.JPG")]
    assert rotated.size == (120, 80)  # EXIF orientation applied: 80 wide, 120 high
    assert any(shape[0] > 1 for shape in model.calls)  # equal shapes shared forward passes


def test_stream_without_workers_and_without_images(tmp_path):
    pictures = write_mixed_folder(tmp_path / "in")
    model = ColourSegmentor("voc", resize=(96, 64))
    predictions = list(model.predict_stream([pictures[1], pictures[0]], workers=0, keep_image=False))
    assert [p.size for p in predictions] == [(96, 64), (64, 96)]  # the order given
    assert all(p.image is None for p in predictions)
    assert np.array_equal(predictions[0].labels, model.predict(pictures[1]).labels)


def test_options_are_checked_before_any_file_is_read(tmp_path):
    model = ColourSegmentor("voc")
    with pytest.raises(ValueError, match="mode"):
        model.predict_stream(tmp_path, mode="tiles")
    with pytest.raises(ValueError, match="workers"):
        model.predict_stream(tmp_path, workers=-1)


def test_bad_files_each_have_their_reason(tmp_path, monkeypatch):
    good = _picture(64, 48, 0)
    Image.fromarray(good).save(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "folder.png").mkdir()
    os.symlink(tmp_path / "absent.png", tmp_path / "dangling.png")
    Image.new("L", (300, 300)).save(tmp_path / "bomb.png")
    expected = {
        "empty.png": "empty file (0 bytes)",
        "text.jpg": "not an image",
        "truncated.png": "truncated or corrupt image",
        "folder.png": "is a folder",
        "dangling.png": "file does not exist",
        "absent.png": "file does not exist",
        "bomb.png": "decompression bomb: 300x300 = 90,000 pixels, more than Pillow's MAX_IMAGE_PIXELS (10,000)",
    }
    for name, reason in expected.items():
        with pytest.raises(ImageReadError) as raised:
            read_image(tmp_path / name, max_pixels=10_000)
        assert raised.value.path == str(tmp_path / name) and reason in raised.value.reason, name
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ImageReadError, match="decompression bomb"):  # Pillow's own check (over twice the limit)
        read_image(tmp_path / "bomb.png", max_pixels=None)
    assert np.array_equal(read_image(tmp_path / "good.png", max_pixels=10_000), good)
    if os.geteuid() != 0:  # root reads any file whatever its mode
        (tmp_path / "locked.png").write_bytes(data)
        (tmp_path / "locked.png").chmod(0)
        with pytest.raises(ImageReadError, match="cannot be read"):
            read_image(tmp_path / "locked.png", max_pixels=None)


def test_shape_batcher_fills_batches_and_bounds_what_waits():
    def item(index: int, shape: tuple[int, int]) -> LoadedImage:
        import torch

        return LoadedImage(index, f"{index}.png", shape, torch.zeros(3, *shape))

    batcher = ShapeBatcher(batch_size=2)  # at most 4 waiting
    shapes = [(8, 8), (4, 4), (8, 8), (2, 2), (6, 6), (1, 1), (3, 3)]
    ready = []
    for index, shape in enumerate(shapes):
        ready += batcher.add(item(index, shape))
    ready += batcher.flush()
    indices = [[i.index for i in batch] for batch in ready]
    assert indices[0] == [0, 2]  # full batch of equal shapes
    assert sorted(i for batch in indices for i in batch) == list(range(len(shapes)))  # each once
    assert all(len({tuple(i.tensor.shape) for i in batch}) == 1 for batch in ready)
    assert [1] in indices[:3]  # the oldest waiting group left early when too many waited


def test_inputs_folders_globs_lists_and_names(tmp_path):
    for name in ("a.jpg", "a.png", "x.y.jpg", "sub/b.png", "sub/deep/c.PNG", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = collect_inputs([str(tmp_path), str(tmp_path / "x.y.jpg"), str(tmp_path / "missing.jpg")])
    assert [(p.path.name, str(p.name)) for p in found] == [
        ("a.jpg", "a.jpg"), ("a.png", "a.png"), ("b.png", "sub/b"), ("c.PNG", "sub/deep/c"), ("x.y.jpg", "x.y"),
        ("missing.jpg", "missing")]
    globbed = collect_inputs([str(tmp_path / "sub" / "**" / "*.*")])
    assert [str(p.name) for p in globbed] == ["b", "deep/c"]
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nsub/b.png\n\n" + str(tmp_path / "sub" / "deep" / "c.PNG") + "\n")
    assert [str(p.name) for p in collect_inputs(list_file=listing)] == ["b", "deep/c"]
    assert [str(p.name) for p in collect_inputs([str(tmp_path)], exclude=tmp_path / "sub")] == [
        "a.jpg", "a.png", "x.y"]
