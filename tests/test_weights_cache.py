"""The cache layout has one owner: temporary files live where it says, are listed, and are cleared once no live
process owns them; ``cache verify`` re-hashes every cached file and, with ``fix``, removes the damaged ones."""
from __future__ import annotations

import os
import time

import pytest

import resnest_zoo
from resnest_zoo.weights.audit import verify_cache
from resnest_zoo.files import temporary_path
from resnest_zoo.weights.cache import STALE_SECONDS, record_path, safetensors_path
from resnest_zoo.weights.model_file import read_model_metadata
from download_helpers import checkpoint_state_dict

from download_helpers import _isolated, server  # noqa: F401 -- fixtures: isolated, and a local HTTP server
from download_helpers import checkpoint_bytes, local_entry, quietly, sha256, use_tiny_models


@pytest.fixture(autouse=True)
def _tiny_models(monkeypatch):
    use_tiny_models(monkeypatch)


def _age(path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_temporary_files_are_listed_and_cleared_once_no_live_process_owns_them(tmp_path):
    entry = resnest_zoo.get_entry("fcn", "voc")
    copy = safetensors_path(tmp_path, entry)
    tmp_path.mkdir(exist_ok=True)
    killed = temporary_path(copy)  # what kill -9 while the copy was written left (hidden)
    dead = temporary_path(record_path(tmp_path / entry.filename))  # and a record's writer that died
    live = tmp_path / f"{entry.filename}.ba9876543210.incomplete"  # a download going on in another process
    for path, age in ((killed, 3600), (dead, STALE_SECONDS + 5), (live, 0)):
        path.write_bytes(b"x" * 1000)
        _age(path, age)
    listed = {r.path: (r.kind, r.entry.name, r.in_use) for r in resnest_zoo.cached_files(tmp_path)}
    assert listed == {killed: ("temporary", entry.name, False), dead: ("temporary", entry.name, False),
                      live: ("partial", entry.name, True)}
    assert sorted(resnest_zoo.clear_cache(tmp_path)) == sorted([killed, dead])
    assert live.exists()
    _age(live, STALE_SECONDS + 5)  # its writer stopped writing a minute ago: it died
    assert resnest_zoo.clear_cache(tmp_path) == [live] and resnest_zoo.cached_files(tmp_path) == []


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_cache_verify_finds_damage_and_fix_removes_it_so_the_next_load_gets_it_again(server, tmp_path):
    data = checkpoint_bytes(seed=12)
    entry = local_entry(server, data)
    quietly(checkpoint_state_dict, entry, tmp_path)  # the checkpoint, its record, the safetensors copy
    checkpoint, copy = tmp_path / entry.filename, safetensors_path(tmp_path, entry)
    first = verify_cache(tmp_path)
    assert [(r.file.path, r.status) for r in first] == [(checkpoint, "ok"), (copy, "ok")]
    assert sha256(data) in first[0].detail

    _flip(checkpoint, len(data) // 2)  # bit-rot in the checkpoint
    _flip(copy, copy.stat().st_size - 10)  # and a hand edit of a tensor in the copy
    damaged = {r.file.path: r.detail for r in verify_cache(tmp_path) if r.status == "damaged"}
    assert set(damaged) == {checkpoint, copy}
    assert damaged[checkpoint].startswith(f"digest mismatch: sha256 expected {sha256(data)} (the record of its first")
    assert damaged[copy].startswith("its tensors changed since it was written")
    assert checkpoint.exists() and copy.exists()  # reported only

    fixed = verify_cache(tmp_path, fix=True)
    assert {r.file.path for r in fixed if r.removed} == {checkpoint, copy}
    assert not checkpoint.exists() and not copy.exists() and verify_cache(tmp_path) == []
    served = len(server.requests())
    state, source = quietly(checkpoint_state_dict, entry, tmp_path)
    assert len(server.requests()) == served + 1 and source == str(checkpoint)  # fetched again
    assert [r.status for r in verify_cache(tmp_path)] == ["ok", "ok"]
    assert read_model_metadata(copy)["source_sha256"] == sha256(data)


def test_cache_verify_reports_a_copy_made_from_another_file(server, tmp_path):
    entry = local_entry(server, checkpoint_bytes(seed=13))
    quietly(checkpoint_state_dict, entry, tmp_path)
    record = tmp_path / (entry.filename + ".sha256")
    record.write_text(f"{'e' * 64}  {entry.filename}\n")  # the copy now comes from another file than the record's
    results = {r.file.kind: r for r in verify_cache(tmp_path)}
    assert results["checkpoint"].status == "damaged" and results["safetensors"].status == "damaged"
    assert "made from another file" in results["safetensors"].detail and "e" * 64 in results["safetensors"].detail
    assert [r.status for r in verify_cache(tmp_path, fix=True)] == ["damaged", "damaged"]
    assert resnest_zoo.cached_files(tmp_path) == []
