"""From download to tensors: fast reloads from the model-only safetensors copy, export, pickle safety, the full
published layout end to end, and several processes downloading one checkpoint at once."""
from __future__ import annotations

import io

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import resnest_zoo
from resnest_zoo.weights.cache import safetensors_path
from resnest_zoo.weights.checkpoint import read_state_dict
from download_helpers import checkpoint_state_dict
from resnest_zoo.errors import CheckpointMismatchError, IntegrityError, UnsafeCheckpointError
from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning

from conftest import REPO_ROOT
from download_helpers import _isolated, server  # noqa: F401 -- fixtures: isolated, and a local HTTP server
from download_helpers import checkpoint_bytes, fast_settings, fitting_checkpoint_bytes, local_entry, quietly
from download_helpers import WORKER_GUARD, WORKER_START, run_together, sha256, use_tiny_models


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def tiny_models(monkeypatch):
    use_tiny_models(monkeypatch)


def _state(entry, cache, **options):
    return quietly(checkpoint_state_dict, entry, cache, **options)


def _model_part(data: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), weights_only=True)["model"]


def _assert_equal(actual, expected):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and torch.equal(actual[key], value), key


# ------------------------------------------------------------------------------------------- fast reload

def test_first_load_keeps_a_model_only_safetensors_copy_and_reloads_from_it(server, cache, tiny_models):
    data = checkpoint_bytes(seed=4)  # model + epoch + optimizer, as published
    entry = local_entry(server, data)
    state, source = _state(entry, cache)
    _assert_equal(state, _model_part(data))
    assert source == str(cache / entry.filename)

    copy = safetensors_path(cache, entry)
    with safe_open(str(copy), framework="pt") as handle:
        assert set(handle.keys()) == set(_model_part(data))  # model tensors only, no optimizer state
        metadata = handle.metadata()
    assert metadata["source_sha256"] == sha256(data) and metadata["source_file"] == entry.filename
    assert metadata["resnest_zoo"] == "model/1" and metadata["dtype"] == "float32"

    (cache / entry.filename).unlink()  # later loads neither read nor re-hash the .pth
    server.close()
    state, source = _state(entry, cache, settings=fast_settings(offline=True))
    _assert_equal(state, _model_part(data))
    assert source.startswith(str(copy)) and f"sha256 {sha256(data)}" in source


def test_copy_made_from_another_file_is_ignored_and_replaced(server, cache, tiny_models):
    data = checkpoint_bytes(seed=5)
    entry = local_entry(server, data, pinned=True)
    _state(entry, cache)
    copy = safetensors_path(cache, entry)
    other = {k: torch.zeros_like(v) for k, v in _model_part(data).items()}
    save_file(other, str(copy), metadata={"resnest_zoo": "model/1", "source_sha256": "f" * 64, "dtype": "float32"})
    state, source = _state(entry, cache)
    _assert_equal(state, _model_part(data))
    assert source == str(cache / entry.filename)  # read from the verified .pth, not the stale copy
    with safe_open(str(copy), framework="pt") as handle:
        assert handle.metadata()["source_sha256"] == sha256(data)  # and the copy was rebuilt


def test_unreadable_copy_is_reported_and_rebuilt(server, cache, tiny_models):
    data = checkpoint_bytes(seed=6)
    entry = local_entry(server, data, pinned=True)
    _state(entry, cache)
    copy = safetensors_path(cache, entry)
    copy.write_bytes(b"\x00" * 64)
    with pytest.warns(RuntimeWarning, match="cached model copy .* is unreadable"):
        state, source = _state(entry, cache)
    _assert_equal(state, _model_part(data))
    assert read_state_dict(copy).keys() == state.keys()


def test_copy_of_an_unpinned_entry_needs_the_first_download_record(server, cache, tiny_models):
    data = checkpoint_bytes(seed=7)
    entry = local_entry(server, data)
    _state(entry, cache)
    (cache / (entry.filename + ".sha256")).unlink()  # nothing left to say which file the copy came from
    requests_before = len(server.requests())
    _, source = _state(entry, cache)
    assert source == str(cache / entry.filename) and len(server.requests()) == requests_before


def test_local_weights_with_wrong_sha256_are_refused_and_kept(tmp_path):
    path = tmp_path / "mine.pth"
    path.write_bytes(checkpoint_bytes(seed=8))
    with pytest.raises(IntegrityError, match=r"mine.pth failed verification: digest mismatch: sha256 expected 3{64} "):
        checkpoint_state_dict(resnest_zoo.get_entry("fcn", "voc"), weights=path, sha256="3" * 64)
    assert path.exists()  # a user's own file is never deleted


# ------------------------------------------------------------------------------------------ pickle safety

class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(server, cache, tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.ones(3)}, "extra": _Payload(marker)}, buffer)
    data = buffer.getvalue()

    entry = local_entry(server, data)  # through the catalogue path: downloaded, verified, then refused
    with pytest.raises(UnsafeCheckpointError, match="Nothing from the file was executed"):
        _state(entry, cache)
    url = server.add("evil/weights.pth", data)  # and as an explicit weights= URL
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        _state(entry, cache, weights=url)
    assert not marker.exists()
    assert not safetensors_path(cache, entry).exists()
    assert [p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts] == []  # nothing of it kept

    evil = tmp_path / "evil.pth"  # the payload is real: an unsafe load would have run it
    evil.write_bytes(data)
    torch.load(evil, weights_only=False)
    assert marker.exists()


# -------------------------------------------------------------------------------------- published layout

@pytest.fixture(scope="module")
def training_file(published_checkpoint):
    """A full-size FCN/VOC file as published: model + epoch + optimizer momentum (about 0.5 GB)."""
    return published_checkpoint("fcn", "voc", with_optimizer=True)


@pytest.mark.slow
def test_published_checkpoint_end_to_end_over_http(server, cache, training_file, monkeypatch):
    path, reference = training_file
    entry = resnest_zoo.get_entry("fcn", "voc")
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("auxiliary_decoder.")}

    model = resnest_zoo.load("fcn", "voc", weights=server.add("any/name.pth", path), device="cpu",
                             cache_dir=cache, progress=False, sha256=resnest_zoo.verify(path).sha256)
    _assert_equal(model.state_dict(), expected)

    server.add(f"mirror/{entry.filename}", path)  # the catalogue path, served by a mirror
    monkeypatch.setenv("RESNEST_ZOO_MIRROR", server.url("mirror"))
    with pytest.warns(UnpinnedCheckpointWarning):
        model = resnest_zoo.load("fcn", "voc", device="cpu", cache_dir=cache, progress=False)
    _assert_equal(model.state_dict(), expected)
    copy = safetensors_path(cache, entry)
    with safe_open(str(copy), framework="pt") as handle:
        assert set(handle.keys()) == set(reference.state_dict())  # model (with auxiliary head), no optimizer
    assert copy.stat().st_size < 0.6 * path.stat().st_size

    served = server.bytes_served()
    model = resnest_zoo.load("fcn", "voc", device="cpu", cache_dir=cache, progress=False)  # from the copy
    _assert_equal(model.state_dict(), expected)
    assert server.bytes_served() == served


@pytest.mark.slow
def test_export_writes_model_only_safetensors_in_float32_and_float16(tmp_path, training_file):
    path, reference = training_file
    out = tmp_path / "export"
    full = resnest_zoo.export("fcn", "voc", out, weights=path)
    half = resnest_zoo.export("fcn", "voc", out, dtype=torch.float16, weights=path)
    assert (full.name, half.name) == ("fcn_resnest101os8_voc_train.safetensors", "fcn_resnest101os8_voc_train.fp16.safetensors")
    with safe_open(str(half), framework="pt") as handle:
        metadata = handle.metadata()
        assert set(handle.keys()) == set(reference.state_dict())
        assert handle.get_tensor("decoder.0.weight").dtype == torch.float16
        assert handle.get_tensor("decoder.1.num_batches_tracked").dtype == torch.int64
    assert metadata["source_sha256"] == resnest_zoo.verify(path).sha256 and metadata["dtype"] == "float16"
    assert half.stat().st_size < 0.55 * full.stat().st_size
    model = resnest_zoo.load("fcn", "voc", weights=full, device="cpu")
    _assert_equal(model.state_dict(), {k: v for k, v in reference.state_dict().items()
                                       if not k.startswith("auxiliary_decoder.")})
    half_model = resnest_zoo.load("fcn", "voc", weights=half, device="cpu")  # float16 file -> float32 model
    assert {t.dtype for t in half_model.parameters()} == {torch.float32}
    torch.testing.assert_close(half_model.decoder[0].weight, reference.decoder[0].weight, atol=2e-3, rtol=1e-3)
    with pytest.raises(CheckpointMismatchError, match="does not fit the pspnet/voc"):
        resnest_zoo.export("pspnet", "voc", out, weights=path)


# --------------------------------------------------------------------------------------------- processes

_WORKER = WORKER_GUARD + "import resnest_zoo\n" + WORKER_START + """
path = resnest_zoo.download("fcn", "voc", progress=False)
print(json.dumps({"path": str(path), "sha256": resnest_zoo.verify(path).sha256}))
"""


@pytest.mark.slow
def test_four_processes_download_one_new_checkpoint_once(server, tmp_path):
    data = fitting_checkpoint_bytes(seed=10, padding=10_000_000)  # ~10 MB, served over ~1 s so the downloads overlap
    entry = resnest_zoo.get_entry("fcn", "voc")
    server.add(f"mirror/{entry.filename}", data)
    server.delay(f"mirror/{entry.filename}", 0.006)
    cache = tmp_path / "shared-cache"
    env = {"RESNEST_ZOO_MIRROR": server.url("mirror"), "RESNEST_ZOO_CACHE": str(cache),
           "RESNEST_ZOO_RETRY_DELAY": "0.01", "PYTHONPATH": str(REPO_ROOT)}
    results = run_together(_WORKER, 4, env, tmp_path)
    assert {r["path"] for r in results} == {str(cache / entry.filename)}
    assert {r["sha256"] for r in results} == {sha256(data)}
    gets = server.requests()
    assert [r.status for r in gets] == [200] and server.bytes_served() == len(data)  # transferred once
    assert sorted(p.name for p in cache.iterdir() if p.is_file()) == [entry.filename, entry.filename + ".sha256"]
