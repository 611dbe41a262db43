"""Correct where file locks lie: processes whose locks lock nothing, filesystems that cannot lock at all, partial
downloads left by other processes (dead, stopped or alive), and the loser of a race to place a file."""
from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import warnings

import pytest
import torch

import resnest_zoo
from resnest_zoo.weights import cache as cache_module
from resnest_zoo.weights.cache import note_path, partials
from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning
from download_helpers import checkpoint_state_dict, download_entry

from conftest import REPO_ROOT
from download_helpers import _isolated, server  # noqa: F401 -- fixtures: isolated, and a local HTTP server
from download_helpers import checkpoint_bytes, fast_settings, fitting_checkpoint_bytes, local_entry, quietly
from download_helpers import WORKER_GUARD, WORKER_START, run_together, sha256, use_tiny_models


def _tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode() + state[key].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_NO_LOCK_WORKER = WORKER_GUARD + """
import fcntl, hashlib, os
fcntl.flock = lambda *args, **kwargs: None  # a filesystem whose locks succeed without locking anything
import resnest_zoo
from resnest_zoo.weights.sources import checkpoint_state_dict
keys = set(json.loads(os.environ["TINY_MODEL_KEYS"]))
def tiny_fit_check(entry, state_dict, source):  # the tiny test file stands for the entry's network
    if set(state_dict) != keys:
        raise ValueError(f"{source} does not fit the tiny test model")
from resnest_zoo.models import strict
strict.check_fits = tiny_fit_check
""" + WORKER_START + """
entry = resnest_zoo.get_entry("fcn", "voc")
state, source, _ = checkpoint_state_dict(entry, check=strict.fits(entry), progress=False)
digest = hashlib.sha256()
for key in sorted(state):
    digest.update(key.encode() + state[key].contiguous().reshape(-1).view(__import__("torch").uint8).numpy().tobytes())
print(json.dumps({"tensors": digest.hexdigest(), "source": source}))
"""


@pytest.mark.slow
def test_processes_whose_locks_lock_nothing_still_load_the_right_weights(server, tmp_path, monkeypatch):
    data = checkpoint_bytes(seed=11, width=1024)  # ~10 MB served over ~1 s: the downloads overlap
    expected = torch.load(io.BytesIO(data), weights_only=True)["model"]
    entry = resnest_zoo.get_entry("fcn", "voc")
    server.add(f"mirror/{entry.filename}", data)
    server.delay(f"mirror/{entry.filename}", 0.006)
    cache = tmp_path / "shared-cache"
    env = {"RESNEST_ZOO_MIRROR": server.url("mirror"), "RESNEST_ZOO_CACHE": str(cache),
           "RESNEST_ZOO_RETRY_DELAY": "0.01", "RESNEST_ZOO_GITHUB_API": server.url("api"), "PYTHONPATH": str(REPO_ROOT),
           "TINY_MODEL_KEYS": json.dumps(sorted(expected))}
    results = run_together(_NO_LOCK_WORKER, 3, env, tmp_path)
    assert len(server.requests(f"mirror/{entry.filename}")) > 1  # no lock held anyone back: they overlapped
    assert {r["tensors"] for r in results} == {_tensors_sha256(expected)}  # every process has the right weights
    assert resnest_zoo.verify(cache / entry.filename).sha256 == sha256(data)
    assert sorted(p.name for p in cache.iterdir() if p.is_file()) == sorted(
        [entry.filename, entry.filename + ".sha256", entry.filename[:-4] + ".safetensors"])  # no temporary file left
    use_tiny_models(monkeypatch)
    with pytest.warns(UnpinnedCheckpointWarning):
        state, source = checkpoint_state_dict(entry, cache_dir=cache, settings=fast_settings(offline=True))
    assert _tensors_sha256(state) == _tensors_sha256(expected) and source.endswith(f"sha256 {sha256(data)})")


def test_a_filesystem_that_cannot_lock_works_without_locks_and_says_so_once(server, tmp_path, monkeypatch):
    class Unlockable:
        def __init__(self, path):
            pass

        def acquire(self, timeout=None):
            raise NotImplementedError("locks are not supported on this filesystem")

    monkeypatch.setattr(cache_module, "FileLock", Unlockable)
    voc = local_entry(server, fitting_checkpoint_bytes(1), pinned=True)
    ade = local_entry(server, fitting_checkpoint_bytes(2, dataset="ade20k"), dataset="ade20k", pinned=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for entry in (voc, ade, voc):
            assert download_entry(entry, cache_dir=tmp_path, progress=False, settings=fast_settings()).path.is_file()
    said = [str(w.message) for w in caught if "cannot lock" in str(w.message)]
    assert len(said) == 1 and "working without locks" in said[0] and "NotImplementedError" in said[0]


def _abandoned_partial(cache, entry, data: bytes, *, released: bool, url: str):
    """A partial download of ``entry`` as another attempt leaves it: half the bytes, and its note."""
    target = cache / entry.filename
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.0123456789ab.incomplete")
    partial.write_bytes(data[: len(data) // 2])
    note_path(partial).write_text(json.dumps({"url": url, "validator": f'"{sha256(data)}"', "total": len(data)}))
    when = 0 if released else time.time() - 120  # let go at once, or written by a process that died 2 minutes ago
    os.utime(partial, (when, when))
    return partial


@pytest.mark.parametrize("released", [True, False], ids=["let-go", "left-by-a-dead-process"])
def test_a_partial_download_no_live_process_owns_is_claimed_and_continued(server, tmp_path, released):
    data = fitting_checkpoint_bytes(4)
    entry = local_entry(server, data, pinned=True)
    left = _abandoned_partial(tmp_path, entry, data, released=released, url=entry.url)
    got = quietly(download_entry, entry, tmp_path)
    assert got.path.read_bytes() == data and not left.exists() and partials(got.path) == []
    (request,) = server.requests()
    assert request.range == f"bytes={len(data) // 2}-" and request.status == 206  # continued, not restarted


def test_a_partial_taken_over_is_copied_so_that_its_writer_if_alive_never_writes_into_ours(server, tmp_path):
    data = fitting_checkpoint_bytes(7)
    entry = local_entry(server, data, pinned=True)
    left = _abandoned_partial(tmp_path, entry, data, released=True, url=entry.url)
    with open(left, "ab") as writer:  # its writer, judged gone, still holds it open
        taken = os.fstat(writer.fileno()).st_ino
        got = quietly(download_entry, entry, tmp_path)
        writer.write(b"late bytes of a writer that was alive after all")
    assert got.path.stat().st_ino != taken and got.path.read_bytes() == data  # a copy of its bytes, never its file
    assert [r.range for r in server.requests()] == [f"bytes={len(data) // 2}-"]  # and yet continued, not restarted


def test_a_partial_download_a_live_process_owns_is_left_alone_and_listed_as_in_use(server, tmp_path):
    data = fitting_checkpoint_bytes(5)
    entry = local_entry(server, data, pinned=True)
    live = _abandoned_partial(tmp_path, entry, data, released=False, url=entry.url)
    os.utime(live)  # written just now: its writer is alive
    got = quietly(download_entry, entry, tmp_path)
    assert got.path.read_bytes() == data and live.read_bytes() == data[: len(data) // 2]
    assert [r.range for r in server.requests()] == [None]  # a download of its own, from byte 0
    listed = {r.path: r.in_use for r in resnest_zoo.cached_files(tmp_path) if r.kind == "partial"}
    assert listed == {live: True}
    assert live not in resnest_zoo.clear_cache(tmp_path) and live.exists()
    os.utime(live, (0, 0))  # its writer let go
    assert {live, note_path(live)} <= set(resnest_zoo.clear_cache(tmp_path)) and not live.exists()


def test_the_loser_of_a_race_to_place_the_file_uses_the_winners_once_verified(server, tmp_path):
    data = fitting_checkpoint_bytes(6)
    entry = local_entry(server, data, pinned=True)
    server.delay(f"releases/{entry.filename}", 0.01)
    target = tmp_path / entry.filename

    placed = []

    def another_process_places_it():
        while not partials(target):
            time.sleep(0.005)
        winner = target.with_name("winner.tmp")
        winner.write_bytes(data)
        os.replace(winner, target)
        placed.append(target.stat().st_ino)

    racer = threading.Thread(target=another_process_places_it)
    racer.start()
    got = quietly(download_entry, entry, tmp_path)
    racer.join()
    assert got.path == target and target.read_bytes() == data
    assert partials(target) == [] and [target.stat().st_ino] == placed  # ours discarded, theirs kept
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [entry.filename, entry.filename + ".sha256"]
