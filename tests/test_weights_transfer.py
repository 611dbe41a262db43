"""Transfer and reading details: what urllib3's Retry does and does not do for us, a resumed download's progress
bar, messages that describe what a file really holds, and the warnings and errors users see."""
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
from resnest_zoo.weights.transfer import RetryPolicy, http_session

from download_helpers import _isolated, server  # noqa: F401 -- fixtures: isolated, and a local HTTP server
from download_helpers import fast_settings, fitting_checkpoint_bytes, local_entry
from http_server import Fault


def test_the_session_retries_before_the_body_but_cannot_resume_a_broken_body(server):
    """Why transfer.py keeps a loop of its own: urllib3's Retry re-sends a request that failed before its answer
    (here two 503s), but once the body streams, a broken connection is the caller's to continue with Range."""
    data = bytes(range(256)) * 4096
    server.add("file", data)
    server.fault("file", Fault.status(503), Fault.status(503), Fault.drop(after=200_000))
    with http_session(RetryPolicy(retries=3, delay=0.01, timeout=5)) as session:
        response = session.get(server.url("file"), stream=True, timeout=5)
        assert response.status_code == 200
        with pytest.raises(Exception):  # noqa: B017 -- whichever requests/urllib3 raise for a reset connection
            for _ in response.iter_content(65536):
                pass
    assert [r.status for r in server.requests()] == [503, 503, 200]  # and no new request after the break


def test_a_resumed_download_says_so_and_its_bar_goes_on_from_where_it_was(server, tmp_path, capfd):
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


def test_the_unpinned_warning_is_said_once_per_process_and_points_at_the_callers_line(server, tmp_path):
    voc = local_entry(server, fitting_checkpoint_bytes(2))
    ade = local_entry(server, fitting_checkpoint_bytes(3, dataset="ade20k"), dataset="ade20k")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for entry in (voc, ade, voc):  # the weights layer itself, called from here
            sources.download_entry(entry, check=fits(entry), cache_dir=tmp_path, progress=False,
                                   settings=fast_settings())
    unpinned = [w for w in caught if w.category is UnpinnedCheckpointWarning]
    assert len(unpinned) == 1 and unpinned[0].filename == __file__
    assert str(unpinned[0].message).startswith(f"{voc.filename} is not pinned in the catalogue and no digest from its "
                                               "publisher is known (its URL is not a GitHub release asset)")


def test_not_available_error_takes_its_attempts_when_made():
    error = CheckpointNotAvailableError("could not get x", [("mirror m", "HTTP 404")])
    assert error.attempts == [("mirror m", "HTTP 404")] and str(error) == "could not get x"
    assert CheckpointNotAvailableError("nothing tried").attempts == []
    assert isinstance(error, OSError) and isinstance(error, resnest_zoo.ResNeStZooError)
