"""Transfer and reading details: retries and resume in one download, a resumed download's progress bar, messages
that describe what a file really holds, and the warnings and errors users see."""
from __future__ import annotations

import re
import warnings

import pytest
import torch

import resnest_zoo
from resnest_zoo.errors import CheckpointFormatError, CheckpointNotAvailableError
from resnest_zoo.weights.checkpoint import read_state_dict
from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning
from download_helpers import download_entry
from resnest_zoo.models.strict import fits
from resnest_zoo.weights import sources
from resnest_zoo import progress

from download_helpers import _isolated, server  # noqa: F401 -- fixtures: isolated, and a local HTTP server
from download_helpers import fast_settings, fitting_checkpoint_bytes, local_entry, sha256
from http_server import Fault


def test_failed_answers_are_retried_and_a_broken_body_is_continued_with_range_in_one_download(server, tmp_path):
    """The session retries answers that failed before their body (two 503s); a body that breaks is continued by a
    Range request of our own, from what was received."""
    data = fitting_checkpoint_bytes(1)
    entry = local_entry(server, data, pinned=True)
    server.delay(f"releases/{entry.filename}", 0.002)
    server.fault(f"releases/{entry.filename}", Fault.status(503), Fault.status(503), Fault.drop(after=len(data) // 2))
    assert download_entry(entry, cache_dir=tmp_path, progress=False, settings=fast_settings()).sha256 == sha256(data)
    requests = server.requests()
    assert [r.status for r in requests] == [503, 503, 200, 206] and [r.range for r in requests[:3]] == [None] * 3
    assert requests[3].range == f"bytes={len(data) - requests[3].body_bytes}-" and requests[3].body_bytes < len(data)


def test_a_resumed_download_says_so_and_its_bar_goes_on_from_where_it_was(server, tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: True)  # a terminal, where the bar is drawn
    data = fitting_checkpoint_bytes(1)
    entry = local_entry(server, data, pinned=True)
    server.delay(f"releases/{entry.filename}", 0.002)
    server.fault(f"releases/{entry.filename}", Fault.drop(after=len(data) // 2))
    download_entry(entry, cache_dir=tmp_path, progress=True, settings=fast_settings())
    err = capfd.readouterr().err
    (said,) = [line for line in err.replace("\r", "\n").splitlines() if "resuming at" in line]
    assert re.fullmatch(rf"{entry.filename}: transfer interrupted after \d+ of {len(data)} bytes \(connection "
                        r"[a-z ]+\); resuming at [\d.]+ MiB of 2.2 MiB", said.strip())
    shown = [int(p) for p in re.findall(r"(\d+)%\|", err)]
    assert shown[-1] == 100 and shown == sorted(shown)  # never back to 0%


def test_format_messages_say_what_the_file_holds(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(bytes(range(7, 250)) * 10)
    with pytest.raises(CheckpointFormatError, match=r"noise.pth is not a readable PyTorch checkpoint or safetensors "
                                                    r"file: its 2430 bytes start with 07 08"):
        read_state_dict(noise)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.pth").write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match=r"weights is a folder, not a checkpoint file: pass the file itself "
                                                    r"\(checkpoint files in it: model.pth\)"):
        read_state_dict(folder)
    empty_model = tmp_path / "empty.pth"
    torch.save({"model": {}}, empty_model)
    with pytest.raises(CheckpointFormatError, match="has no state dict: its 'model' entry is empty"):
        read_state_dict(empty_model)
    mixed = tmp_path / "mixed.pth"
    torch.save({"model": {"w": torch.ones(1), "step": 3}}, mixed)
    with pytest.raises(CheckpointFormatError, match=r"'model' entry holds 1 tensors and 1 other entries: step \(int\)"):
        read_state_dict(mixed)
    with pytest.raises(CheckpointFormatError, match="checkpoint or safetensors file: the file is empty"):
        read_state_dict(folder / "model.pth")


def test_the_unpinned_warning_is_one_short_line_said_once_per_process_and_points_at_the_callers_line(server,
                                                                                                    tmp_path):
    voc = local_entry(server, fitting_checkpoint_bytes(2))
    ade = local_entry(server, fitting_checkpoint_bytes(3, dataset="ade20k"), dataset="ade20k")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for entry in (voc, ade, voc):  # the weights layer itself, called from here
            sources.download_entry(entry, check=fits(entry), cache_dir=tmp_path, progress=False,
                                   settings=fast_settings())
    unpinned = [w for w in caught if w.category is UnpinnedCheckpointWarning]
    assert len(unpinned) == 1 and unpinned[0].filename == __file__
    message = str(unpinned[0].message)
    assert message == (f"{voc.filename} not pinned: checked against the digest of its first download; pin it with "
                       "sha256=")
    assert "\n" not in message and len(message) < 120
    assert unpinned[0].message.reason == "its URL is not a GitHub release asset"  # why, for whoever asks


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_torchrun_only_rank_0_warns_and_every_rank_records_the_first_download(server, tmp_path, monkeypatch,
                                                                                    rank):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", rank)
    data = fitting_checkpoint_bytes(2)
    entry = local_entry(server, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        download_entry(entry, cache_dir=tmp_path, progress=False, settings=fast_settings())
    assert [w.category for w in caught if w.category is UnpinnedCheckpointWarning] == (
        [UnpinnedCheckpointWarning] if rank == "0" else [])
    assert (tmp_path / (entry.filename + ".sha256")).read_text().split()[0] == sha256(data)


def test_a_failed_download_is_an_oserror_listing_each_source_tried_with_its_reason(server, tmp_path):
    entry = local_entry(server, None, path="gone.pth", hf_repo=None)
    settings = fast_settings(mirror=server.url("empty"))
    with pytest.raises(OSError) as info:  # what a caller catches for any file that cannot be had
        download_entry(entry, cache_dir=tmp_path, progress=False, settings=settings)
    assert isinstance(info.value, CheckpointNotAvailableError) and isinstance(info.value, resnest_zoo.ResNeStZooError)
    assert info.value.attempts == [(f"mirror {server.url('empty')}/{entry.filename}", "HTTP 404 Not Found"),
                                   (f"catalogue URL {entry.url}", "HTTP 404 Not Found")]
