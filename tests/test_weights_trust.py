"""Trust that does not depend on the first download being good: a file is recorded only once it reads safely as a
checkpoint that fits its entry, a bad one is removed with everything made from it, and the publisher (GitHub's
release API) is asked for the size and digest before a first download is trusted."""
from __future__ import annotations

import dataclasses
import io
import json
import warnings

import pytest
import torch

from resnest_zoo.errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotAvailableError,
    UnsafeCheckpointError,
)
from resnest_zoo.weights.cache import release_note_path
from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning
from download_helpers import checkpoint_state_dict, download_entry

from download_helpers import _isolated, server  # noqa: F401 -- fixtures: isolated, and a local HTTP server
from download_helpers import fast_settings, fitting_checkpoint_bytes, local_entry, release_path, serve_release, sha256
from http_server import Fault, FileServer


@pytest.fixture(scope="module")
def data() -> bytes:
    return fitting_checkpoint_bytes(seed=7)


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".locks" not in p.parts)


class _Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def _evil() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.ones(3)}, "extra": _Payload()}, buffer)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------- bad first downloads

@pytest.mark.parametrize("served, error, says", [
    (lambda data: data[: len(data) // 2], CheckpointFormatError, "is truncated or corrupted"),
    (lambda data: b"<html>Service Unavailable</html>", CheckpointFormatError, "holds text"),
    (lambda data: _evil(), UnsafeCheckpointError, "Nothing from the file was executed"),
    (lambda data: fitting_checkpoint_bytes(8, dataset="ade20k"), CheckpointMismatchError, "looks like the fcn/ade20k"),
], ids=["truncated", "error-page", "code-in-pickle", "another-dataset"])
def test_a_bad_first_download_from_a_mirror_is_removed_and_a_fixed_mirror_just_works(server, data, tmp_path, served,
                                                                                     error, says):
    entry = local_entry(server, None, path="not-published.pth")  # not pinned; only the mirror has the file
    name = f"mirror/{entry.filename}"
    server.add(name, served(data))
    settings = fast_settings(mirror=server.url("mirror"))
    with pytest.raises(error) as info:
        checkpoint_state_dict(entry, cache_dir=tmp_path, progress=False, settings=settings)
    message = str(info.value)
    assert says in message and f"{entry.filename} from mirror {server.url(name)}" in message
    assert "Removed from the cache: " in message and "once its source is fixed, the same call gets it again" in message
    assert _files(tmp_path) == []  # no file, no record, no copy, no partial: nothing poisons the next try

    server.add(name, data)  # the mirror is fixed
    with pytest.warns(UnpinnedCheckpointWarning):
        state, source = checkpoint_state_dict(entry, cache_dir=tmp_path, progress=False, settings=settings)
    assert source == str(tmp_path / entry.filename) and len(state) > 900
    assert (tmp_path / (entry.filename + ".sha256")).read_text().split()[0] == sha256(data)


def test_a_file_placed_by_hand_is_checked_before_its_digest_is_recorded(server, data, tmp_path):
    entry = local_entry(server, data)
    (tmp_path / entry.filename).write_bytes(b"\x00" * 1000)  # not a checkpoint at all
    with pytest.raises(CheckpointFormatError, match=r"safetensors file: its 1000 bytes start with 00") as info:
        download_entry(entry, cache_dir=tmp_path, progress=False, settings=fast_settings(offline=True))
    assert f"Removed from the cache: {tmp_path / entry.filename}" in str(info.value) and _files(tmp_path) == []
    with pytest.warns(UnpinnedCheckpointWarning):
        got = download_entry(entry, cache_dir=tmp_path, progress=False, settings=fast_settings())
    assert got.sha256 == sha256(data)


# --------------------------------------------------------------------------------------- the publisher

def _github_entry(server, data, served=None):
    """An unpinned entry whose URL is a GitHub release asset on the test server (serving ``served`` or ``data``)."""
    entry = local_entry(server, None, path="unused.pth")
    path = release_path(entry)
    server.add(path, data if served is None else served)
    return dataclasses.replace(entry, url=server.url(path)), path


def test_the_publishers_digest_is_read_once_and_decides(server, data, tmp_path):
    entry, path = _github_entry(server, data)
    api = serve_release(server, {entry.filename: (len(data), sha256(data)), "other.pth": (5, None)})
    settings = fast_settings(github_api=api, github_token="t0ken")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpinnedCheckpointWarning)  # checked against a published digest: no warning
        got = download_entry(entry, cache_dir=tmp_path, progress=False, settings=settings)
        download_entry(entry, cache_dir=tmp_path, progress=False, settings=settings, force=True)
    assert got.sha256 == sha256(data)
    api_calls = [r for r in server.requests() if r.path.startswith("api/")]
    assert len(api_calls) == 1 and api_calls[0].authorization == "Bearer t0ken"  # read once, kept beside the file
    note = json.loads(release_note_path(got.path).read_text())
    assert (note["size"], note["sha256"], note["asset_url"]) == (len(data), sha256(data), entry.url)


def test_a_file_that_is_not_the_published_one_is_refused(server, data, tmp_path):
    other = fitting_checkpoint_bytes(seed=9)  # a valid checkpoint of the entry, but not the one published
    entry, path = _github_entry(server, data, served=other)
    api = serve_release(server, {entry.filename: (len(other), sha256(data))})
    with pytest.raises(CheckpointNotAvailableError) as info:
        download_entry(entry, cache_dir=tmp_path, progress=False, settings=fast_settings(github_api=api))
    message = str(info.value)
    assert f"digest mismatch: sha256 expected {sha256(data)} (the publisher's digest, GitHub release API" in message
    assert "the downloaded file was deleted" in message
    assert _files(tmp_path) == [entry.filename + ".release.json"]  # only what the publisher said


def test_a_release_without_a_digest_still_checks_the_size(server, data, tmp_path):
    entry, path = _github_entry(server, data, served=data[:-10])
    api = serve_release(server, {entry.filename: (len(data), None)})
    settings = fast_settings(github_api=api)
    with pytest.raises(CheckpointNotAvailableError, match=f"the server's file is {len(data) - 10} bytes, GitHub "
                                                          f"release API, read .* says {len(data)}"):
        download_entry(entry, cache_dir=tmp_path, progress=False, settings=settings)
    server.add(path, data)
    with pytest.warns(UnpinnedCheckpointWarning) as caught:
        assert download_entry(entry, cache_dir=tmp_path, progress=False, settings=settings).sha256 == sha256(data)
    assert caught[0].message.reason.startswith("its release lists its size but no digest")


@pytest.mark.parametrize("trouble, says", [
    ("rate-limit", "rate limit exceeded (HTTP 403; unauthenticated calls are limited to 60 an hour: set GITHUB_TOKEN)"),
    ("unreachable", "connection refused by 127.0.0.1"),
    ("no-release", "no such release (HTTP 404)"),
], ids=["403-rate-limit", "unreachable", "no-release"])
def test_without_the_publishers_word_the_first_download_is_recorded_with_one_warning(server, data, tmp_path, trouble,
                                                                                     says):
    entry, _ = _github_entry(server, data)
    api = serve_release(server, {entry.filename: (len(data), sha256(data))})
    if trouble == "rate-limit":
        server.fault("api/repos/SegmentationBLWX/modelstore/releases/tags/ssseg_resnest",
                     Fault.status(403, {"X-RateLimit-Remaining": "0"}))
    elif trouble == "unreachable":
        closed = FileServer()
        api = closed.url("api")
        closed.close()
    else:
        api = server.url("elsewhere")
    settings = fast_settings(github_api=api)
    with pytest.warns(UnpinnedCheckpointWarning) as caught:
        got = download_entry(entry, cache_dir=tmp_path, progress=False, settings=settings)
        download_entry(entry, cache_dir=tmp_path, progress=False, settings=settings)
    assert len(caught) == 1 and says in caught[0].message.reason  # said once per process, with the reason
    assert "checked against the digest of its first download" in str(caught[0].message)
    assert (tmp_path / (entry.filename + ".sha256")).read_text().split()[0] == sha256(data)
    assert not release_note_path(got.path).exists()
