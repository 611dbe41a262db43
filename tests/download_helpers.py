"""Helpers shared by the download tests: small checkpoints in the published layout, local catalogue entries,
fast retry settings, and a guard that keeps every test off the internet."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import warnings

import pytest
import torch

from resnest_zoo.weights import integrity
from resnest_zoo.weights.integrity import UnpinnedCheckpointWarning
from resnest_zoo.catalogue import CheckpointEntry, get_entry
from resnest_zoo.weights.sources import SourceSettings
from resnest_zoo.weights.transfer import RetryPolicy

from http_server import FileServer

ENV_VARS = ("RESNEST_ZOO_CACHE", "RESNEST_ZOO_MIRROR", "RESNEST_ZOO_OFFLINE", "HF_HUB_OFFLINE",
            "RESNEST_ZOO_RETRIES", "RESNEST_ZOO_RETRY_DELAY", "RESNEST_ZOO_TIMEOUT")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A clean environment: no resnest_zoo variables, a private default cache, and name resolution that
    fails for every host but 127.0.0.1 (so no test can reach the internet, and DNS failures are testable)."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESNEST_ZOO_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known (test guard: {host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    monkeypatch.setattr(integrity, "_warned_unpinned", set())  # each test sees the once-per-process warning


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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_entry(server: FileServer, data: bytes | None, *, segmentor: str = "fcn", dataset: str = "voc",
                pinned: bool = False, path: str | None = None, **changes) -> CheckpointEntry:
    """The catalogue entry with its URL on the test server (serving ``data`` when given), pinned if asked."""
    entry = get_entry(segmentor, dataset)
    path = path or f"releases/{entry.filename}"
    if data is not None:
        server.add(path, data)
    values = {"url": server.url(path), "sha256": sha256(data) if pinned and data is not None else None}
    values.update(changes)
    return dataclasses.replace(entry, **values)
