"""Helpers shared by the download tests: small checkpoints in the published layout (some that fit a catalogue
entry's model), local catalogue entries, an imitation of GitHub's release API, fast retry settings, and a guard
that keeps every test off the internet."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from resnest_zoo.catalogue import CheckpointEntry, get_entry
from resnest_zoo.errors import CheckpointMismatchError
from resnest_zoo.models.segmentor import build_segmentor
from resnest_zoo.weights import cache, obtain
from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning
from resnest_zoo.models import strict
from resnest_zoo.models.strict import fits
from resnest_zoo.weights import sources
from resnest_zoo.weights.sources import SourceSettings
from resnest_zoo.weights.transfer import RetryPolicy

from http_server import FileServer

ENV_VARS = ("RESNEST_ZOO_CACHE", "RESNEST_ZOO_MIRROR", "RESNEST_ZOO_OFFLINE", "HF_HUB_OFFLINE",
            "RESNEST_ZOO_RETRIES", "RESNEST_ZOO_RETRY_DELAY", "RESNEST_ZOO_TIMEOUT", "RESNEST_ZOO_GITHUB_API",
            "GITHUB_TOKEN")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
RELEASE = ("SegmentationBLWX", "modelstore", "ssseg_resnest")  # owner, repository, tag of the catalogue's assets


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A clean environment: no resnest_zoo variables but quick retries, a private default cache, and name resolution
    that fails for every host but 127.0.0.1 (so no test can reach the internet, and DNS failures are testable)."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESNEST_ZOO_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("RESNEST_ZOO_RETRY_DELAY", "0.01")  # a failed lookup is retried like any failure: quickly here
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known (test guard: {host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    monkeypatch.setattr(obtain, "_unpinned_warned", False)  # each test sees the once-per-process warnings
    monkeypatch.setattr(cache, "_lock_free_warned", False)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """:func:`isolate` for every test of a module that imports this fixture."""
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def server():
    """A running :class:`FileServer`, closed after the test."""
    with FileServer() as running:
        yield running


WORKER_GUARD = """
import json, socket, sys, time
from pathlib import Path
real_getaddrinfo = socket.getaddrinfo
def local_only(host, *args, **kwargs):  # the same guard as the tests: never the internet
    if host not in ("127.0.0.1", "localhost"):
        raise socket.gaierror(socket.EAI_NONAME, "test guard: " + str(host))
    return real_getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = local_only
"""
WORKER_START = """
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.005)
"""


def run_together(script: str, count: int, env: dict[str, str], folder: Path) -> list[dict]:
    """Run ``count`` Python processes of ``script`` (which runs :data:`WORKER_START` before its work and prints
    one JSON line last), let them all go at the same moment, and return what each printed."""
    workers = []
    for index in range(count):
        ready = folder / f"ready{index}"
        workers.append((ready, subprocess.Popen([sys.executable, "-c", script, str(ready), str(folder / "go")],
                                                env={**os.environ, **env}, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in workers):
        assert time.monotonic() < deadline and all(p.poll() is None for _, p in workers), "a worker failed to start"
        time.sleep(0.02)
    (folder / "go").touch()
    results = []
    for _, process in workers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def fast_settings(**overrides) -> SourceSettings:
    """Quick retries for tests: 3 retries after 10 ms, 20 ms, 40 ms; 5 s timeout."""
    policy = overrides.pop("policy", RetryPolicy(retries=3, delay=0.01, max_delay=0.05, timeout=5.0))
    return SourceSettings(policy=policy, **overrides)


def quietly(function, entry: CheckpointEntry, cache, **options):
    """``function(entry, cache_dir=cache, **options)`` with fast retries, no progress bar and no unpinned warning."""
    options.setdefault("settings", fast_settings())
    options.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedCheckpointWarning)
        return function(entry, cache_dir=cache, **options)


def checkpoint_bytes(seed: int = 0, *, width: int = 512, with_optimizer: bool = True) -> bytes:
    """A small checkpoint in the sssegmentation layout ({'model', 'epoch', 'optimizer'}), as bytes (~2-3 MB)."""
    generator = torch.Generator().manual_seed(seed)
    model = {
        "backbone_net.stem.0.weight": torch.randn(width, width, generator=generator),
        "decoder.0.weight": torch.randn(width, width // 2, generator=generator),
        "decoder.0.bias": torch.randn(width, generator=generator),
        "decoder.1.num_batches_tracked": torch.tensor(1000),
    }
    state: dict = {"model": model}
    if with_optimizer:
        state["epoch"] = 60
        state["optimizer"] = {
            "state": {i: {"momentum_buffer": torch.zeros_like(v)} for i, v in enumerate(model.values())
                      if v.is_floating_point()},
            "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1, 2]}],
        }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def tiny_fit_check(entry: CheckpointEntry, state_dict, source: str) -> None:
    """Stands for the strict fit check where a test is about something else: the tiny checkpoints of
    :func:`checkpoint_bytes` play every entry's model (their layout, not a network's, is required)."""
    layout = {k: tuple(v.shape) for k, v in torch.load(io.BytesIO(checkpoint_bytes(with_optimizer=False)),
                                                       weights_only=True)["model"].items()}
    if {k: tuple(v.shape) for k, v in state_dict.items()} != layout:
        raise CheckpointMismatchError(f"{source} does not fit the tiny test model of {entry.name}")


def use_tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads check files against :func:`tiny_fit_check`: quick tests of caching, with 2 MB files."""
    monkeypatch.setattr(strict, "check_fits", tiny_fit_check)


def download_entry(entry: CheckpointEntry, **options):
    """The weights layer's download of ``entry``, checking its tensors as ``resnest_zoo.download`` does."""
    return sources.download_entry(entry, check=fits(entry), **options)


def download_url(url: str, **options):
    """The weights layer's download of a URL, checking its tensors against ``entry=`` as ``load`` does."""
    entry = options.get("entry")
    return sources.download_url(url, check=fits(entry) if entry is not None else None, **options)


def checkpoint_state_dict(entry: CheckpointEntry, **options):
    """``(tensors, source)`` of ``entry`` as ``resnest_zoo.load`` reads them (its file's digest is dropped)."""
    state_dict, source, _ = sources.checkpoint_state_dict(entry, check=fits(entry), **options)
    return state_dict, source


@functools.lru_cache(maxsize=None)
def _model_layout(segmentor: str, dataset: str) -> tuple[tuple[str, tuple[int, ...], torch.dtype], ...]:
    with torch.device("meta"):
        model = build_segmentor(get_entry(segmentor, dataset), auxiliary_head=True)
    return tuple((k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items())


def fitting_checkpoint_bytes(seed: int = 0, *, segmentor: str = "fcn", dataset: str = "voc",
                             padding: int = 2_000_000) -> bytes:
    """A checkpoint whose tensors fit the entry's model, yet small: each tensor is one seeded value expanded to
    its shape (stride 0, so one number is stored), plus ``padding`` bytes of random optimizer state."""
    generator = torch.Generator().manual_seed(seed)
    model = {name: (torch.randn(1, generator=generator) if dtype.is_floating_point else torch.tensor([seed]))
             .to(dtype).reshape([1] * len(shape)).expand(shape)
             for name, shape, dtype in _model_layout(segmentor, dataset)}
    state = {"model": model, "epoch": 60,
             "optimizer": {"state": {0: {"momentum_buffer": torch.randn(padding // 4, generator=generator)}}}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def release_path(entry: CheckpointEntry) -> str:
    """Where the test server serves ``entry``'s file as a GitHub release asset (owner/repo/releases/download/...)."""
    owner, repo, tag = RELEASE
    return f"{owner}/{repo}/releases/download/{tag}/{entry.filename}"


def serve_release(server: FileServer, assets: dict[str, tuple[int, str | None]]) -> str:
    """Imitate GitHub's release API on the test server: ``{name: (size, sha256 or None)}`` as the assets of the
    catalogue's release; returns the API base URL to use as ``github_api``."""
    owner, repo, tag = RELEASE
    document = {"tag_name": tag, "assets": [
        {"name": name, "size": size, **({"digest": f"sha256:{digest}"} if digest else {})}
        for name, (size, digest) in assets.items()]}
    server.add(f"api/repos/{owner}/{repo}/releases/tags/{tag}", json.dumps(document).encode())
    return server.url("api")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_entry(server: FileServer, data: bytes | None, *, segmentor: str = "fcn", dataset: str = "voc",
                pinned: bool = False, path: str | None = None, **changes) -> CheckpointEntry:
    """The catalogue entry with its URL on the test server (serving ``data`` when given), pinned if asked."""
    entry = get_entry(segmentor, dataset)
    path = path or f"releases/{entry.filename}"  # not a GitHub release path: no publisher's digest is asked for
    if data is not None:
        server.add(path, data)
    values = {"url": server.url(path), "sha256": sha256(data) if pinned and data is not None else None}
    values.update(changes)
    return dataclasses.replace(entry, **values)
