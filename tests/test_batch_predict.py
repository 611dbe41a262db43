"""``resnest_zoo.predict_to_folder``: masks equal to ``model.predict``, written atomically, resumable after
``kill -9``, the same bytes from two torchrun processes as from one, Cityscapes label ids as the reference's
``formatresults`` writes them, and bad inputs or outputs handled as documented."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resnest_zoo
from resnest_zoo.files import temporary_path
from resnest_zoo.errors import OutputConflictError, OutputWriteError
from resnest_zoo.inference import outputs as outputs_module

from synthetic_data import ColourSegmentor, synthetic_datasets, write_cityscapes  # noqa: F401  (fixture)
from test_eval_distributed import JOBS, launch
from test_stream import _picture, write_mixed_folder


def files_below(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("manifest")}


def manifest_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("manifest*.jsonl")) for line in path.read_text().splitlines()]


def test_masks_equal_predict_and_keep_the_folder_structure(tmp_path):
    write_mixed_folder(tmp_path / "in")
    model = ColourSegmentor("voc", resize=(96, 64))
    failures = []
    summary = resnest_zoo.predict_to_folder(model, [tmp_path / "in"], tmp_path / "out", overlay=True, workers=1,
                                            batch_size=2, report=lambda path, reason: failures.append((path, reason)))
    assert (summary.done, summary.skipped, summary.failed, summary.total) == (6, 0, 1, 7)
    assert failures == [(str(tmp_path / "in" / "zz_broken.jpg"), "not an image (Pillow cannot identify the format)")]
    for source in (tmp_path / "in").rglob("*"):
        if source.suffix.lower() not in (".png", ".jpg") or source.name == "zz_broken.jpg":
            continue
        relative = source.relative_to(tmp_path / "in").with_suffix("")
        mask = Image.open(tmp_path / "out" / f"{relative}.png")
        expected = model.predict(source)
        assert mask.mode == "P" and np.array_equal(np.asarray(mask), expected.labels), source
        overlay = Image.open(tmp_path / "out" / f"{relative}_overlay.png")
        assert np.array_equal(np.asarray(overlay), np.asarray(expected.overlay(0.5)))
    lines = manifest_lines(tmp_path / "out")
    assert sorted(line["status"] for line in lines) == ["done"] * 6 + ["failed"]
    failed = next(line for line in lines if line["status"] == "failed")
    assert failed["input"].endswith("zz_broken.jpg") and "not an image" in failed["error"]
    assert not list((tmp_path / "out").rglob(".*.partial"))


def test_rerun_skips_what_is_done_and_overwrite_redoes_it(tmp_path):
    write_mixed_folder(tmp_path / "in")
    (tmp_path / "in" / "zz_broken.jpg").unlink()
    model = ColourSegmentor("voc", resize=(96, 64))
    resnest_zoo.predict_to_folder(model, tmp_path / "in", tmp_path / "out", workers=0)
    written = files_below(tmp_path / "out")
    (tmp_path / "out" / "a_rgb.png").unlink()  # as if the run had been killed before it
    temporary_path(tmp_path / "out" / "a_rgb.png", unique=False).write_bytes(b"half a PNG from a killed run")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.png")}
    model.calls.clear()
    again = resnest_zoo.predict_to_folder(model, tmp_path / "in", tmp_path / "out", workers=0)
    assert (again.done, again.skipped) == (1, 5) and sum(c[0] for c in model.calls) == 1
    assert files_below(tmp_path / "out") == written
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())  # nothing complete was rewritten
    assert not list((tmp_path / "out").rglob(".*.partial"))
    redo = resnest_zoo.predict_to_folder(model, tmp_path / "in", tmp_path / "out", workers=0, overwrite=True)
    assert (redo.done, redo.skipped) == (6, 0)
    assert [line["status"] for line in manifest_lines(tmp_path / "out")].count("skipped") == 5


def test_formats_npy_and_list_and_glob_inputs(tmp_path):
    pictures = write_mixed_folder(tmp_path / "in")
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in pictures[:2]))
    model = ColourSegmentor("voc", resize=(96, 64))
    summary = resnest_zoo.predict_to_folder(model, [str(tmp_path / "in" / "nested" / "*.png")], tmp_path / "out",
                                            list_file=listing, format="npy", workers=0)
    assert summary.done == 3
    arrays = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npy"))
    assert arrays == ["a_rgb.npy", "b_grey.npy", "d_palette.npy"]
    assert np.array_equal(np.load(tmp_path / "out" / "b_grey.npy"), model.predict(pictures[1]).labels)


def test_cityscapes_ids_are_the_references_formatresults(tmp_path, monkeypatch):
    import cityscapesscripts  # noqa: F401  (what the reference's formatresults needs; in the test extra)
    put_palette = Image.Image.putpalette
    # formatresults passes a numpy palette, which Pillow < 10 turned into its bytes and Pillow 13 no longer does
    monkeypatch.setattr(Image.Image, "putpalette", lambda self, data, rawmode="RGB": put_palette(
        self, bytes(data) if isinstance(data, np.ndarray) else data, rawmode))
    from ssseg.modules.datasets.cityscapes import CityScapesDataset

    root = write_cityscapes(tmp_path / "data", count=2) / "cityscapes" / "leftImg8bit"
    model = ColourSegmentor("cityscapes")
    resnest_zoo.predict_to_folder(model, root, tmp_path / "ours", format="cityscapes-ids", workers=0)
    images = sorted(root.rglob("*_leftImg8bit.png"))
    predictions = [model.predict(path).labels.astype(np.int32) for path in images]  # as its test.py passes them
    ids = [f"{p.parent.name}/{p.stem}" for p in images]  # as the reference's dataset names them
    CityScapesDataset.formatresults(predictions, ids, to_label_id=True, savedir=str(tmp_path / "reference"))
    for path in images:  # same name, mode, pixels and palette; ours also carries the resnest-zoo text chunk
        ours, theirs = Image.open(tmp_path / "ours" / path.relative_to(root)), Image.open(tmp_path / "reference" / path.name)
        assert ours.mode == theirs.mode == "P" and ours.getpalette() == theirs.getpalette()
        assert np.array_equal(np.asarray(ours), np.asarray(theirs)), path
    assert set(np.unique(np.asarray(Image.open(tmp_path / "ours" / images[0].relative_to(root))))) <= {
        7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
    with pytest.raises(ValueError, match="19 Cityscapes classes"):
        resnest_zoo.predict_to_folder(ColourSegmentor("voc"), root, tmp_path / "x", format="cityscapes-ids")


def test_unwritable_output_stops_before_any_work(tmp_path):
    Image.fromarray(_picture(64, 48, 0)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("a file, not a folder")
    model = ColourSegmentor("voc")
    with pytest.raises(OutputWriteError, match="cannot write masks into .*is a file, not a folder"):
        resnest_zoo.predict_to_folder(model, tmp_path / "a.png", tmp_path / "file" / "out")
    with pytest.raises(OutputConflictError, match="would be written over the input image .*inputs are never written"):
        resnest_zoo.predict_to_folder(model, tmp_path / "a.png", tmp_path)
    (tmp_path / "out").mkdir()
    Image.new("P", (4, 4)).save(tmp_path / "out" / "a.png")  # the user's own file, where the mask would go
    with pytest.raises(OutputConflictError, match="1 output file.* not written by resnest-zoo predict"):
        resnest_zoo.predict_to_folder(model, tmp_path / "a.png", tmp_path / "out")
    assert model.calls == []


def test_a_full_disk_stops_the_run_and_keeps_the_masks_written(tmp_path, monkeypatch):
    for index in range(8):
        Image.fromarray(_picture(64, 48, index)).save(tmp_path / f"{index}.png")
    real = outputs_module.atomic_write
    written = []

    @contextlib.contextmanager
    def fill_up(target, **options):  # the fourth file fills the disk once half of it is written
        with real(target, **options) as temporary:
            yield temporary
            if len(written) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(target)

    monkeypatch.setattr(outputs_module, "atomic_write", fill_up)
    with pytest.raises(OutputWriteError, match="No space left on device"):
        resnest_zoo.predict_to_folder(ColourSegmentor("voc"), [tmp_path / f"{i}.png" for i in range(8)],
                                      tmp_path / "out", workers=0, batch_size=1, writers=1)
    masks = sorted((tmp_path / "out").glob("*.png"))
    assert masks == sorted(written) and len(masks) == 3
    assert all(Image.open(mask).size == (64, 48) for mask in masks)  # complete, readable
    done = [line for line in manifest_lines(tmp_path / "out") if line["status"] == "done"]
    assert len(done) == 3


def test_the_output_folder_inside_an_input_folder_is_not_an_input(tmp_path):
    Image.fromarray(_picture(64, 48, 0)).save(tmp_path / "a.png")
    model = ColourSegmentor("voc")
    first = resnest_zoo.predict_to_folder(model, tmp_path, tmp_path / "predictions", workers=0)
    second = resnest_zoo.predict_to_folder(model, tmp_path, tmp_path / "predictions", workers=0)
    assert (first.done, second.skipped, second.total) == (1, 1, 1)
    assert not (tmp_path / "predictions" / "predictions").exists()


@pytest.mark.slow
def test_two_processes_write_exactly_the_outputs_of_one(tmp_path):
    write_mixed_folder(tmp_path / "in")
    launch("predict", "voc", str(tmp_path / "one"), "0", str(tmp_path / "in"), "--", "overlay=true", processes=1)
    launch("predict", "voc", str(tmp_path / "two"), "1", str(tmp_path / "in"), "--", "overlay=true", processes=2)
    one, two = files_below(tmp_path / "one"), files_below(tmp_path / "two")
    assert one == two and len(one) == 12
    lines = manifest_lines(tmp_path / "two")
    assert len(list((tmp_path / "two").glob("manifest.rank*.jsonl"))) == 2
    inputs = [line["input"] for line in lines]
    assert len(inputs) == len(set(inputs)) == 7  # each input handled by exactly one process, once
    summary = json.loads((tmp_path / "two.json").read_text())
    assert (summary["done"], summary["failed"], summary["processes"]) == (6, 1, 2)


@pytest.mark.slow
def test_a_run_killed_part_way_resumes_without_redoing_or_leaving_temporary_files(tmp_path):
    for index in range(24):
        Image.fromarray(_picture(64 + index, 48, index)).save(tmp_path / f"in_{index:02d}.png")
    out = tmp_path / "out"
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TEST_FORWARD_DELAY": "0.25"}
    command = [sys.executable, str(JOBS), "predict", "voc", str(out), "1", *(str(p) for p in sorted(tmp_path.glob("in_*.png"))),
               "--", "batch_size=1", "writers=2"]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("in_*.png"))) < 6 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("in_*.png")}
    assert 6 <= len(finished) < 24
    for mask in finished:  # every file with a final name is complete
        assert Image.open(mask).size[1] == 48
    environment["TEST_FORWARD_DELAY"] = "0"
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(Path(f"{out}.json").read_text())
    assert summary["skipped"] == len(finished) and summary["done"] == 24 - len(finished)
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in finished.items())  # none redone
    masks = sorted(out.glob("in_*.png"))
    assert len(masks) == 24 and all(Image.open(mask).size == (64 + i, 48) for i, mask in enumerate(masks))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.slow
def test_predict_command_takes_lists_and_globs_and_reports_bad_files(published_checkpoint, tmp_path):
    from test_cli import run

    weights, _ = published_checkpoint("fcn", "voc")
    for index in range(3):  # thin pictures: resized to a few thousand pixels, a quick forward
        Image.fromarray(_picture(900, 3, index)).save(tmp_path / f"thin_{index}.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(_picture(900, 4, 9)).save(tmp_path / "sub" / "more.png")
    (tmp_path / "sub" / "broken.png").write_bytes(b"")
    (tmp_path / "list.txt").write_text("thin_0.png\nthin_1.png\n")
    command = ("predict", "--list", str(tmp_path / "list.txt"), str(tmp_path / "sub" / "*.png"), "-m", "fcn/voc",
               "--weights", str(weights), "-o", str(tmp_path / "out"), "--mask-format", "npy", "--device", "cpu",
               "--workers", "1", "--batch-size", "2")
    done = run(*command, timeout=300)
    assert done.returncode == 1, done.stderr  # some inputs failed, the others were segmented
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'sub' / 'broken.png'}: empty file (0 bytes)"]
    assert "3 of 4 image(s) segmented into" in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["more.npy", "thin_0.npy", "thin_1.npy"]
    assert np.load(tmp_path / "out" / "thin_1.npy").shape == (3, 900)
    statuses = sorted(line["status"] for line in manifest_lines(tmp_path / "out"))
    assert statuses == ["done", "done", "done", "failed"]
