"""Issue 19, sections 1 and 2: every output of every input lands inside the output folder, and no image is silently
skipped -- ``--list`` entries through ``..``, absolute paths and links, a list with a byte-order mark, folders linked
in (with loops) for predict, the three dataset readers and the training folder, dangling links reported as failed
inputs, the manifest's paths, and evaluation saying how many images it found and used."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

import resnest_zoo
from resnest_zoo.datasets import READERS
from resnest_zoo.errors import OutputConflictError
from resnest_zoo.inference.inputs import collect_inputs
from resnest_zoo.training.data import SegmentationFolder

from finetune_helpers import synthetic_pairs, write_pairs
from synthetic_data import ColourSegmentor, write_ade20k, write_cityscapes, write_voc
from test_stream import _picture


def _photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_picture(48 + seed, 32, seed)).save(path)
    return path


def _masks_below(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ --list

def test_list_entries_through_dotdot_absolute_and_links_are_named_inside_the_output_folder(tmp_path):
    lists = tmp_path / "esc" / "lists"
    _photo(lists / "x.jpg", 0)
    _photo(tmp_path / "victim" / "v.jpg", 1)
    absolute = _photo(tmp_path / "photos" / "a.png", 2)
    _photo(tmp_path / "elsewhere" / "w.jpg", 3)
    (tmp_path / "elsewhere" / "sub").mkdir()
    os.symlink(tmp_path / "elsewhere" / "sub", lists / "link")  # link/../w.jpg is elsewhere/w.jpg, as any program reads it
    os.symlink(tmp_path / "photos", lists / "linked")
    listing = lists / "paths.txt"
    listing.write_text("\ufeffx.jpg\n../../victim/v.jpg\n" f"{absolute}\n" "link/../w.jpg\nlinked/a.png\n",
                       encoding="utf-8")  # a byte-order mark before the first path, as Windows editors save
    out = tmp_path / "esc" / "out"
    summary = resnest_zoo.predict_to_folder(ColourSegmentor("voc"), (), out, list_file=listing, workers=0)
    assert (summary.done, summary.failed) == (4, 0)  # photos/a.png listed twice (once through a link): done once
    # named below the deepest folder holding them all (tmp_path): nothing written beside an input, no stray folders
    assert _masks_below(out) == ["elsewhere/w.png", "esc/lists/x.png", "photos/a.png", "victim/v.png"]
    outside = sorted(os.path.relpath(os.path.join(folder, name), tmp_path) for folder, _, files in os.walk(tmp_path)
                     if not Path(folder).is_relative_to(out) for name in files if name.endswith(".png"))
    assert outside == ["photos/a.png"] and not (out / "lists").exists()  # the only PNG outside -o is an input
    mask = Image.open(out / "elsewhere" / "w.png")
    assert mask.size == (51, 32)  # the picture the system opens for link/../w.jpg (seed 3: 51 px wide)


def test_a_link_inside_the_output_folder_never_leads_outputs_out_of_it(tmp_path):
    _photo(tmp_path / "in" / "sub" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "victim").mkdir()
    os.symlink(tmp_path / "victim", tmp_path / "out" / "sub")
    with pytest.raises(OutputConflictError, match=r"would be written outside the output folder .*symbolic link"):
        resnest_zoo.predict_to_folder(ColourSegmentor("voc"), tmp_path / "in", tmp_path / "out", workers=0)
    assert list((tmp_path / "victim").iterdir()) == []


# ------------------------------------------------------------------------------------------ linked folders

def _linked_tree(tmp_path: Path) -> Path:
    """``photos/`` with a picture of its own, a folder linked in from ``shared/`` (twice: ``linked`` and ``twice``),
    a link back to itself (``loop``), a link from the shared folder back to ``photos`` and a dangling link."""
    photos = tmp_path / "photos"
    _photo(photos / "a.png", 0)
    _photo(tmp_path / "shared" / "b.png", 1)
    _photo(tmp_path / "shared" / "deep" / "c.png", 2)
    os.symlink(tmp_path / "shared", photos / "linked")
    os.symlink(tmp_path / "shared", photos / "twice")
    os.symlink(photos, photos / "loop")
    os.symlink(photos, tmp_path / "shared" / "back")
    os.symlink(tmp_path / "gone.jpg", photos / "broken.jpg")
    return photos


def test_a_folder_with_linked_folders_and_loops_is_walked_once_and_a_dangling_link_fails_as_an_input(tmp_path):
    photos = _linked_tree(tmp_path)
    names = ["a", "broken", "linked/b", "linked/deep/c"]
    assert [str(item.name) for item in collect_inputs([photos])] == names
    assert [str(item.name) for item in collect_inputs([str(photos / "**" / "*.*")])] == names
    failures = []
    summary = resnest_zoo.predict_to_folder(ColourSegmentor("voc"), photos, tmp_path / "out", workers=0,
                                            report=lambda path, reason: failures.append((path, reason)))
    assert (summary.done, summary.failed) == (3, 1)
    assert _masks_below(tmp_path / "out") == ["a.png", "linked/b.png", "linked/deep/c.png"]
    reason = f"file does not exist (a symbolic link to {str(tmp_path / 'gone.jpg')!r}, which is not there)"
    assert failures == [(str(photos / "broken.jpg"), reason)]
    failed = [line for line in _manifest(tmp_path / "out") if line["status"] == "failed"]
    assert [(line["input"], line["error"]) for line in failed] == [(str(photos / "broken.jpg"), reason)]


def test_the_manifest_names_inputs_absolutely_and_outputs_inside_the_output_folder(tmp_path, monkeypatch):
    _photo(tmp_path / "work" / "photos" / "sub" / "a.png")
    monkeypatch.chdir(tmp_path / "work")
    resnest_zoo.predict_to_folder(ColourSegmentor("voc"), "photos", "masks", overlay=True, workers=0)
    monkeypatch.chdir(tmp_path)  # read from elsewhere: the record means the same
    [line] = _manifest(tmp_path / "work" / "masks")
    assert line["input"] == str(tmp_path / "work" / "photos" / "sub" / "a.png")
    assert line["outputs"] == ["sub/a.png", "sub/a_overlay.png"]
    assert all((tmp_path / "work" / "masks" / name).is_file() for name in line["outputs"])


# ------------------------------------------------------------------------------- datasets and training data

def _move_and_link(folder: Path, storage: Path) -> None:
    """Move ``folder`` to ``storage`` and put a link to it where it was (data linked in from shared storage)."""
    storage.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder, storage)
    os.symlink(storage, folder)


def test_cityscapes_with_linked_city_folders_is_evaluated_whole_and_says_how_many_images(tmp_path):
    root = write_cityscapes(tmp_path / "data", count=4)
    for kind in ("leftImg8bit", "gtFine"):
        for city in ("aachen", "frankfurt"):
            _move_and_link(root / "cityscapes" / kind / "val" / city, tmp_path / "storage" / kind / city)
        os.symlink(root / "cityscapes" / kind / "val", root / "cityscapes" / kind / "val" / "loop")
    result = resnest_zoo.evaluate(ColourSegmentor("cityscapes"), root, workers=0)
    assert (result.images, result.images_found, result.published_images) == (4, 4, 500)
    assert "4 images of cityscapes val (4 found; the split has 500 as published)" in result.details()
    assert result.summary().endswith("; on 4 of the split's 500 images)")
    limited = resnest_zoo.evaluate(ColourSegmentor("cityscapes"), root, workers=0, limit=3)
    assert "3 images of cityscapes val (the first 3 of 4 found; the split has 500 as published)" in str(limited)
    data = limited.to_dict()
    assert (data["images"], data["images_found"], data["published_images"]) == (3, 4, 500)


def test_each_dataset_reader_follows_linked_folders_once(tmp_path):
    ade = write_ade20k(tmp_path / "ade", count=3) / "ADEChallengeData2016"
    for kind, suffix in (("images", ".jpg"), ("annotations", ".png")):
        _move_and_link(ade / kind / "validation", tmp_path / "storage" / "ade" / kind)
        os.symlink(ade / kind / "validation", tmp_path / "storage" / "ade" / kind / "loop")
        extra = tmp_path / "storage" / "ade-extra" / kind
        extra.mkdir(parents=True)
        shutil.move(tmp_path / "storage" / "ade" / kind / f"ADE_val_00000003{suffix}", extra)
        os.symlink(extra, ade / kind / "validation" / "extra")  # a folder linked in below the split's folder
    voc = write_voc(tmp_path / "voc", count=3) / "VOCdevkit" / "VOC2012"
    for kind in ("JPEGImages", "SegmentationClass"):
        _move_and_link(voc / kind, tmp_path / "storage" / "voc" / kind)
    city = write_cityscapes(tmp_path / "city", count=4) / "cityscapes"
    _move_and_link(city / "leftImg8bit" / "val", tmp_path / "storage" / "city" / "images")
    _move_and_link(city / "gtFine" / "val", tmp_path / "storage" / "city" / "annotations")
    os.symlink(tmp_path / "storage" / "city", tmp_path / "storage" / "city" / "images" / "aachen" / "up")
    for key, folder, count in (("ade20k", tmp_path / "ade", 3), ("voc", tmp_path / "voc", 3),
                               ("cityscapes", tmp_path / "city", 4)):
        samples = READERS[key].samples(folder, "val")
        assert len(samples) == count and len({s.image.resolve() for s in samples}) == count, key
        assert all(s.annotation.is_file() for s in samples), key


def test_a_training_folder_with_linked_folders_and_a_loop_pairs_every_image_once(tmp_path):
    images, masks = synthetic_pairs(4)
    root = write_pairs(tmp_path / "data", images, masks)
    for kind in ("images", "masks"):
        (tmp_path / "storage" / kind).mkdir(parents=True)
        for name in ("002.png", "003.png"):
            shutil.move(root / kind / name, tmp_path / "storage" / kind / name)
        os.symlink(tmp_path / "storage" / kind, root / kind / "linked")
        os.symlink(root / kind, tmp_path / "storage" / kind / "back")  # a loop through the link
    data = SegmentationFolder(root, num_classes=2)
    assert [sample.id for sample in data.samples] == ["000", "001", "linked/002", "linked/003"]
    image, mask = data[3]
    assert image.equal(images[3]) and mask.equal(masks[3])
