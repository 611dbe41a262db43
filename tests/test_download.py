"""Downloading, resuming, retrying, verifying and caching checkpoints, against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import re
import warnings

import pytest

import resnest_zoo
from resnest_zoo import progress
from resnest_zoo.weights import cache as cache_module
from resnest_zoo.weights.cache import partials, record_path
from download_helpers import download_entry, download_url
from resnest_zoo.errors import CheckpointNotAvailableError, ConfigurationError, IntegrityError
from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning
from resnest_zoo.weights.settings import SourceSettings
from resnest_zoo.weights.transfer import RetryPolicy

from download_helpers import _isolated, server  # noqa: F401 -- fixtures: isolated, and a local HTTP server
from download_helpers import fast_settings, fitting_checkpoint_bytes, local_entry, quietly, sha256
from http_server import Fault, FileServer


@pytest.fixture(scope="module")
def data() -> bytes:
    return fitting_checkpoint_bytes(seed=1)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _get(entry, cache, **options):
    return quietly(download_entry, entry, cache, **options)


def _leftovers(cache):
    return sorted(p.name for p in cache.iterdir() if p.is_file() and not p.name.endswith((".pth", ".sha256")))


# -------------------------------------------------------------------------------------------- transport

def test_verified_download_is_cached_and_never_downloaded_again(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    first = _get(entry, cache)
    assert first.path == cache / entry.filename and first.path.read_bytes() == data
    assert first.sha256 == sha256(data) and first.size == len(data)
    assert _leftovers(cache) == []  # no .incomplete, no notes
    requests_before = len(server.requests())
    again = _get(entry, cache)
    assert again == first and len(server.requests()) == requests_before


def test_connection_dropped_mid_body_resumes_with_range(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    server.delay(f"releases/{entry.filename}", 0.002)  # the client reads as the bytes arrive
    server.fault(f"releases/{entry.filename}", Fault.drop(after=len(data) // 2))
    got = _get(entry, cache)
    assert got.path.read_bytes() == data
    first, second = server.requests()
    assert first.range is None and first.body_bytes == len(data) // 2
    assert second.status == 206 and second.range.startswith("bytes=")
    resumed_at = int(second.range[6:-1])  # a reset discards what the client had not read yet: less than half
    assert 0 < resumed_at <= len(data) // 2
    assert second.body_bytes == len(data) - resumed_at  # resumed, not restarted


def test_download_cut_in_half_resumes_in_the_next_call(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    server.fault(f"releases/{entry.filename}", Fault.truncate(after=len(data) // 2))
    no_retry = fast_settings(policy=RetryPolicy(retries=0, delay=0.01, timeout=5.0))
    with pytest.raises(CheckpointNotAvailableError, match=r"interrupted after \d+ of \d+ bytes") as info:
        _get(entry, cache, settings=no_retry)
    assert "connection closed before the end of the body) (gave up after 1 attempt)" in str(info.value)
    target = cache / entry.filename
    assert not target.exists(), "a partial file must never sit under the final name"
    (partial,) = partials(target)
    kept = partial.stat().st_size
    assert 0 < kept <= len(data) // 2
    got = _get(entry, cache)
    assert got.path.read_bytes() == data and partials(target) == [] and _leftovers(cache) == []
    assert server.requests()[-1].range == f"bytes={kept}-"
    assert len(data) <= server.bytes_served() <= len(data) + 64 * 1024  # at most the last read buffer twice


def test_server_errors_are_retried_with_backoff(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    server.fault(f"releases/{entry.filename}", Fault.status(500), Fault.status(503), Fault.status(429))
    got = _get(entry, cache)
    assert got.path.read_bytes() == data
    assert [r.status for r in server.requests()] == [500, 503, 429, 200]


def test_persistent_server_error_gives_up_and_says_so(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    server.fault(f"releases/{entry.filename}", *[Fault.status(502)] * 5)
    with pytest.raises(CheckpointNotAvailableError) as info:
        _get(entry, cache, settings=fast_settings(policy=RetryPolicy(retries=2, delay=0.01, timeout=5.0)))
    message = str(info.value)
    assert f"catalogue URL {entry.url}: HTTP 502" in message and "gave up after 3 attempts" in message
    assert f"place it at {cache / entry.filename}" in message and "weights=" in message
    assert len(server.requests()) == 3 and not (cache / entry.filename).exists()


def test_truncated_body_is_detected_by_content_length_and_completed(server, data, cache):
    entry = local_entry(server, data)
    server.fault(f"releases/{entry.filename}", Fault.truncate(after=len(data) // 3), Fault.truncate(after=1000))
    got = _get(entry, cache)
    assert got.path.read_bytes() == data
    assert [r.status for r in server.requests()] == [200, 206, 206]


@pytest.mark.parametrize("pinned", [True, False], ids=["catalogue-pin", "caller-sha256"])
def test_wrong_bytes_fail_verification_and_nothing_is_left(server, data, cache, pinned):
    entry = local_entry(server, data, pinned=pinned)
    server.fault(f"releases/{entry.filename}", Fault.corrupt())
    options = {} if pinned else {"sha256": sha256(data).upper()}
    with pytest.raises(CheckpointNotAvailableError) as info:
        _get(entry, cache, **options)
    message = str(info.value)
    assert f"digest mismatch: sha256 expected {sha256(data)} ({'the catalogue' if pinned else 'sha256='}" in message
    assert "the downloaded file was deleted" in message
    assert not (cache / entry.filename).exists() and _leftovers(cache) == []
    assert _get(entry, cache, **options).path.read_bytes() == data  # the next try starts clean


def test_server_that_ignores_range_restarts_from_zero(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    server.fault(f"releases/{entry.filename}", Fault.truncate(after=len(data) // 2), Fault.ignore_range())
    got = _get(entry, cache)
    assert got.path.read_bytes() == data
    assert [r.status for r in server.requests()] == [200, 200]


def test_partial_of_a_file_changed_upstream_is_not_spliced(server, data, cache):
    entry = local_entry(server, data)
    server.fault(f"releases/{entry.filename}", Fault.truncate(after=len(data) // 2))
    no_retry = fast_settings(policy=RetryPolicy(retries=0, delay=0.01, timeout=5.0))
    with pytest.raises(CheckpointNotAvailableError):
        _get(entry, cache, settings=no_retry)
    new_version = fitting_checkpoint_bytes(seed=2)
    server.add(f"releases/{entry.filename}", new_version)  # new ETag: If-Range makes the server send it all
    got = _get(entry, cache)
    assert got.path.read_bytes() == new_version
    last = server.requests()[-1]
    assert last.range is not None and last.status == 200


def test_stalled_server_times_out_and_is_reported(server, data, cache):
    entry = local_entry(server, data)
    server.fault(f"releases/{entry.filename}", *[Fault.stall(1.0)] * 2)
    settings = fast_settings(policy=RetryPolicy(retries=1, delay=0.01, timeout=0.25))
    with pytest.raises(CheckpointNotAvailableError, match=r"timed out \(no answer within 0.25 s\) \(gave up after 2"):
        _get(entry, cache, settings=settings)


def test_slow_but_steady_server_is_not_cut_off(server, cache):
    small = fitting_checkpoint_bytes(seed=3, padding=400_000)
    entry = local_entry(server, small)
    server.delay(f"releases/{entry.filename}", 0.1)  # ~12 chunks: about 1.2 s in all, 0.1 s between packets
    got = _get(entry, cache, settings=fast_settings(policy=RetryPolicy(retries=0, timeout=0.6)))
    assert got.path.read_bytes() == small and len(server.requests()) == 1


def test_size_disagreeing_with_the_catalogue_is_refused_before_downloading(server, data, cache):
    entry = local_entry(server, data, size=len(data) + 1)
    with pytest.raises(CheckpointNotAvailableError, match=f"the server's file is {len(data)} bytes, the catalogue says"):
        _get(entry, cache)
    assert partials(cache / entry.filename) == [] and not (cache / entry.filename).exists()


def test_every_source_is_named_with_its_reason(server, data, cache, tmp_path):
    entry = local_entry(server, None, path="missing.pth", hf_repo=None)
    closed = FileServer()
    refused_url = closed.url("x")
    closed.close()
    settings = fast_settings(mirror="https://mirror.invalid/zoo")
    with pytest.raises(CheckpointNotAvailableError) as info:
        _get(entry, cache, settings=settings)
    message = str(info.value)
    assert f"could not get {entry.filename} ({entry.title}). Sources tried:" in message
    assert f"mirror https://mirror.invalid/zoo/{entry.filename}: DNS lookup failed for host 'mirror.invalid'" in message
    assert f"catalogue URL {entry.url}: HTTP 404 Not Found" in message
    assert f"To supply the file by hand: download {entry.url}" in message
    assert [a[0].split()[0] for a in info.value.attempts] == ["mirror", "catalogue"]
    with pytest.raises(CheckpointNotAvailableError, match="connection refused by 127.0.0.1.*gave up after 2 attempts"):
        download_url(refused_url, cache_dir=cache, progress=False,
                     settings=fast_settings(policy=RetryPolicy(retries=1, delay=0.01, timeout=2.0)))


# ---------------------------------------------------------------------------------------------- sources

def test_mirror_url_from_the_environment_comes_first(server, cache, monkeypatch):
    entry = resnest_zoo.get_entry("pspnet", "ade20k")
    data = fitting_checkpoint_bytes(segmentor="pspnet", dataset="ade20k")
    server.add(f"mirror/{entry.filename}", data)
    monkeypatch.setenv("RESNEST_ZOO_MIRROR", server.url("mirror/"))
    monkeypatch.setenv("RESNEST_ZOO_CACHE", str(cache))
    with pytest.warns(UnpinnedCheckpointWarning, match=f"{entry.filename} not pinned"):
        path = resnest_zoo.download("psp", "ade", progress=False)  # the public function, catalogue entry
    assert path == cache / entry.filename and path.read_bytes() == data
    assert [r.path for r in server.requests()] == [f"mirror/{entry.filename}"]


@pytest.mark.parametrize("mirror, why", [("ftp://mirror.example/zoo", "ftp:// is not supported"),
                                         ("absent", "there is no folder")], ids=["ftp", "no-such-folder"])
def test_a_mirror_that_is_neither_a_url_nor_a_folder_is_refused_with_the_reason(tmp_path, monkeypatch, mirror, why):
    monkeypatch.setenv("RESNEST_ZOO_MIRROR", str(tmp_path / mirror) if mirror == "absent" else mirror)
    with pytest.raises(ConfigurationError, match=rf"environment variable RESNEST_ZOO_MIRROR=.* is neither an http\(s\) "
                                                 rf"URL nor an existing folder \({why}"):
        resnest_zoo.download("fcn", "voc", progress=False)
    assert not (tmp_path / "default-cache").exists()  # refused before anything was tried


def test_a_mirror_given_as_a_file_url_is_that_folder(server, data, cache, tmp_path, monkeypatch):
    entry = local_entry(server, data, pinned=True)
    (tmp_path / "my mirror").mkdir()
    (tmp_path / "my mirror" / entry.filename).write_bytes(data)
    monkeypatch.setenv("RESNEST_ZOO_MIRROR", (tmp_path / "my mirror").as_uri())
    monkeypatch.setenv("RESNEST_ZOO_OFFLINE", "1")
    assert _get(entry, cache, settings=SourceSettings.from_env(policy=RetryPolicy())).path.read_bytes() == data


def test_mirror_folder_is_copied_without_any_network(server, data, cache, tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    entry = local_entry(server, data, pinned=True)
    (folder / entry.filename).write_bytes(data)
    got = _get(entry, cache, settings=fast_settings(mirror=str(folder), offline=True))
    assert got.path == cache / entry.filename and got.path.read_bytes() == data
    assert server.requests() == []


def test_mirror_without_the_file_falls_back_to_the_catalogue_url(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    got = _get(entry, cache, settings=fast_settings(mirror=server.url("empty-mirror")))
    assert got.path.read_bytes() == data
    assert [(r.path, r.status) for r in server.requests()] == [
        (f"empty-mirror/{entry.filename}", 404), (f"releases/{entry.filename}", 200)]


def test_hugging_face_hub_source_uses_its_cache_and_offline_rules(server, data, cache, tmp_path):
    entry = local_entry(server, None, path="not-there.pth", hf_repo="zoo/resnest", sha256=sha256(data))
    server.add(f"zoo/resnest/resolve/main/{entry.filename}", data, headers={"X-Repo-Commit": "c" * 40})
    hub = fast_settings(hf_endpoint=server.base_url, hf_cache_dir=str(tmp_path / "hf"))
    got = _get(entry, cache, settings=hub)
    assert got.path.is_relative_to(tmp_path / "hf") and got.path.read_bytes() == data
    assert not (cache / entry.filename).exists()  # the file stays in the Hub's cache
    server.close()
    offline = dataclasses.replace(hub, offline=True)
    assert _get(entry, cache, settings=offline).path == got.path  # answered from the Hub's cache
    with pytest.raises(CheckpointNotAvailableError) as info:
        _get(dataclasses.replace(entry, sha256="0" * 64), cache, settings=offline)
    assert "Hugging Face Hub repo zoo/resnest: digest mismatch: sha256 expected 000" in str(info.value)


def test_weights_url_is_cached_per_url_and_verified(server, data, cache):
    url = server.add("elsewhere/model.pth", data)
    got = download_url(url, cache_dir=cache, progress=False, sha256=sha256(data), settings=fast_settings())
    assert got.path.name == "model.pth" and got.path.parent.parent.name == "resnest_zoo-urls"
    with pytest.warns(UnpinnedCheckpointWarning, match="model.pth not pinned") as caught:
        assert download_url(url, cache_dir=cache, progress=False, settings=fast_settings()).path == got.path
    assert caught[0].message.reason.startswith(f"{url} was given without sha256=")
    assert len(server.requests()) == 1
    with pytest.raises(CheckpointNotAvailableError, match="expected 1111"):
        download_url(server.add("elsewhere/other.pth", data), cache_dir=cache, progress=False, sha256="1" * 64,
                     settings=fast_settings())


# ---------------------------------------------------------------------------------------- verification

def test_unpinned_entry_records_its_first_digest_and_catches_tampering(server, data, cache):
    entry = local_entry(server, data)
    with pytest.warns(UnpinnedCheckpointWarning, match="not pinned: checked against the digest of its first") as caught:
        got = download_entry(entry, cache_dir=cache, progress=False, settings=fast_settings())
    assert len([w for w in caught if w.category is UnpinnedCheckpointWarning]) == 1
    record = record_path(got.path)
    assert record.read_text() == f"{sha256(data)}  {entry.filename}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpinnedCheckpointWarning)  # said once per process, not on every load
        download_entry(entry, cache_dir=cache, progress=False, settings=fast_settings())

    tampered = bytearray(data)
    tampered[100] ^= 1
    got.path.write_bytes(bytes(tampered))
    assert _get(entry, cache).path.read_bytes() == data  # caught, deleted, downloaded again
    assert len(server.requests()) == 2

    got.path.write_bytes(bytes(tampered))
    server.add(f"releases/{entry.filename}", fitting_checkpoint_bytes(seed=9))  # and upstream changed meanwhile
    with pytest.raises(CheckpointNotAvailableError) as info:
        _get(entry, cache)
    message = str(info.value)
    assert f"cached file {got.path}: failed verification (digest mismatch: sha256 expected {sha256(data)}" in message
    assert f"the record of its first download, {record}" in message and not got.path.exists()
    assert f"if the published file really changed, delete the record {record}" in message


def test_corrupted_cached_file_is_deleted_even_offline(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    got = _get(entry, cache)
    got.path.write_bytes(data[:-10])
    with pytest.raises(CheckpointNotAvailableError) as info:
        _get(entry, cache, settings=fast_settings(offline=True))
    assert "failed verification (digest mismatch" in str(info.value) and f"removed {got.path}" in str(info.value)
    assert not got.path.exists()


def test_force_downloads_again_and_replaces_the_copy_only_once_verified(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    _get(entry, cache)
    server.fault(f"releases/{entry.filename}", Fault.corrupt())
    with pytest.raises(CheckpointNotAvailableError, match="digest mismatch"):
        _get(entry, cache, force=True)
    assert (cache / entry.filename).read_bytes() == data  # the verified copy survives a failed forced download
    _get(entry, cache, force=True)
    assert len(server.requests()) == 3


def test_read_only_cache_is_verified_in_place(server, data, cache, monkeypatch):
    entry = local_entry(server, data, pinned=True)
    _get(entry, cache)

    def read_only(path):
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(cache_module, "FileLock", read_only)
    assert _get(entry, cache).path == cache / entry.filename
    (cache / entry.filename).write_bytes(data[:-1])
    with pytest.raises(CheckpointNotAvailableError, match="not writable .* so it was not deleted: delete or replace"):
        _get(entry, cache)
    assert (cache / entry.filename).exists() and len(server.requests()) == 1


def test_caller_sha256_must_agree_with_the_catalogue_pin(server, data, cache):
    entry = local_entry(server, data, pinned=True)
    with pytest.raises(IntegrityError, match="differs from the catalogue's pin"):
        _get(entry, cache, sha256="2" * 64)
    with pytest.raises(ValueError, match="must be 64 hexadecimal digits"):
        _get(entry, cache, sha256="abc")


def test_verify_prints_what_pins_a_file(tmp_path, data):
    path = tmp_path / "some.pth"
    path.write_bytes(data)
    digest = resnest_zoo.verify(path)
    assert (digest.sha256, digest.size, digest.path) == (sha256(data), len(data), path)
    assert str(digest) == f"{sha256(data)}  {len(data)}  {path}"
    with pytest.raises(FileNotFoundError, match="no such file"):
        resnest_zoo.verify(tmp_path / "absent.pth")


# --------------------------------------------------------------------------------------------- offline

@pytest.mark.parametrize("variable", ["RESNEST_ZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_never_touches_the_network(server, data, cache, monkeypatch, variable):
    entry = local_entry(server, data, hf_repo="zoo/resnest")
    monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("RESNEST_ZOO_MIRROR", server.url("mirror"))
    with pytest.raises(CheckpointNotAvailableError) as info:
        download_entry(entry, cache_dir=cache, progress=False)
    message = str(info.value)
    assert f"could not get {entry.filename}" in message and f"in offline mode ({variable}=1)" in message
    assert f"place it at {cache / entry.filename}" in message
    assert f"mirror {server.url('mirror')}/{entry.filename}: skipped: offline mode" in message
    assert "Hugging Face Hub repo zoo/resnest: not in the Hugging Face cache" in message
    assert server.requests() == [] and server.requests(method="HEAD") == []

    (cache / entry.filename).write_bytes(data)  # placed by hand, as the message says
    server.close()
    with pytest.warns(UnpinnedCheckpointWarning):
        assert download_entry(entry, cache_dir=cache, progress=False).path == cache / entry.filename


# ---------------------------------------------------------------------------------------------- cache

def test_cached_files_and_clear_cache(server, data, cache):
    voc = local_entry(server, data)
    _get(voc, cache)
    city = local_entry(server, data, segmentor="fcn", dataset="cityscapes")
    server.fault(f"releases/{city.filename}", Fault.truncate(after=200_000))
    with pytest.raises(CheckpointNotAvailableError):
        _get(city, cache, settings=fast_settings(policy=RetryPolicy(retries=0)))
    download_url(server.add("x/y.pth", data), cache_dir=cache, progress=False, sha256=sha256(data),
                 settings=fast_settings())
    (partial,) = partials(cache / city.filename)
    note = cache_module.note_path(partial)
    kept = partial.stat().st_size
    assert 0 < kept <= 200_000
    records = {(r.kind, r.entry.name if r.entry else None, r.path.name, r.size, r.in_use)
               for r in resnest_zoo.cached_files(cache)}
    assert records == {
        ("checkpoint", voc.name, voc.filename, len(data), False),
        ("partial", city.name, partial.name, kept, False),  # let go by the attempt that stopped: no owner
        ("temporary", city.name, note.name, note.stat().st_size, False),
        ("checkpoint", None, "y.pth", len(data), False),
    }
    removed = resnest_zoo.clear_cache(cache, segmentor="fcn", dataset="voc")
    assert sorted(p.name for p in removed) == [voc.filename, voc.filename + ".sha256"]
    with pytest.raises(ValueError, match="both segmentor and dataset, or neither"):
        resnest_zoo.clear_cache(cache, segmentor="fcn")
    removed = resnest_zoo.clear_cache(cache)
    assert {p.name for p in removed} == {partial.name, note.name, "y.pth", "y.pth.sha256"}
    assert resnest_zoo.cached_files(cache) == [] and resnest_zoo.cached_files(cache / "absent") == []


def test_a_cache_folder_that_is_a_file_is_refused_with_the_reason(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("RESNEST_ZOO_CACHE", str(tmp_path / "file"))
    file = tmp_path / "file"
    with pytest.raises(ConfigurationError, match=rf"cannot use {file} as the cache folder: {file} is a file, not a "
                                                 r"folder; give a folder \(--cache-dir, RESNEST_ZOO_CACHE or "
                                                 r"cache_dir=\)"):
        resnest_zoo.download("fcn", "voc", progress=False)
    with pytest.raises(ConfigurationError, match=rf"{tmp_path / 'file'} is a file, not a folder"):  # or lies under one
        resnest_zoo.cached_files(tmp_path / "file" / "sub")


def test_default_cache_is_torch_hub_checkpoints_unless_overridden(monkeypatch, tmp_path):
    import torch.hub

    from resnest_zoo.weights.cache import resolve_cache_dir

    monkeypatch.delenv("RESNEST_ZOO_CACHE")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert resolve_cache_dir() == tmp_path / "hub" / "checkpoints"
    monkeypatch.setenv("RESNEST_ZOO_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_progress_is_a_bar_on_a_terminal_lines_in_a_log_and_nothing_when_off(server, data, cache, capfd,
                                                                            monkeypatch):
    entry = local_entry(server, data, pinned=True)
    _get(entry, cache, progress=None)  # under pytest stderr is not a terminal: no bar
    _get(entry, cache / "off", progress=False)
    assert capfd.readouterr().err == ""
    _get(entry, cache / "log", progress=True)  # into a log: a plain status line, never a bar redrawn with \r
    (line,) = capfd.readouterr().err.splitlines()
    assert re.fullmatch(rf"{re.escape(entry.filename)}: 2.\d+M/2.\d+M B \[.*\]", line)
    monkeypatch.setattr(progress, "interactive", lambda: True)  # a terminal: the bar
    _get(entry, cache / "terminal", progress=True)
    assert f"{entry.filename}: 100%" in capfd.readouterr().err


def test_environment_retry_settings(monkeypatch):
    monkeypatch.setenv("RESNEST_ZOO_RETRIES", "7")
    monkeypatch.setenv("RESNEST_ZOO_RETRY_DELAY", "0.01")
    monkeypatch.setenv("RESNEST_ZOO_TIMEOUT", "3")
    assert RetryPolicy.from_env() == RetryPolicy(retries=7, delay=0.01, timeout=3.0)
    monkeypatch.setenv("RESNEST_ZOO_RETRIES", "many")
    with pytest.raises(ValueError, match="RESNEST_ZOO_RETRIES='many' is not valid: it must be a whole number"):
        RetryPolicy.from_env()
