"""A device that is not there: one clear :class:`DeviceNotAvailableError` from ``load``, ``build`` and the
resolution itself, saying what was asked for and what was found, before any download or build (issue 10).

CUDA is faked absent or present (two GPUs) by patching torch's queries, so the tests mean the same on any machine.
"""
from __future__ import annotations

import pytest
import torch

import resnest_zoo
from resnest_zoo.devices import available_devices, resolve_device
from resnest_zoo.errors import DeviceNotAvailableError, ResNeStZooError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_code_that_catches_value_error_catches_a_missing_device_before_any_download(no_cuda, tmp_path):
    """docs/inference.md documents the error as a ValueError: that is what callers catch, and nothing is fetched first."""
    with pytest.raises(ValueError, match="no CUDA device is available") as caught:
        resnest_zoo.load("fcn", "voc", device="cuda", cache_dir=tmp_path)
    assert isinstance(caught.value, ResNeStZooError) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda"), 0])
def test_cuda_without_a_gpu_says_none_is_available_and_what_was_found(no_cuda, device):
    with pytest.raises(DeviceNotAvailableError) as caught:
        resolve_device(device)
    message = str(caught.value)
    assert "no CUDA device is available" in message and "devices found here: cpu." in message
    assert "Use 'cpu'" in message


def test_an_index_past_the_gpus_present(two_gpus):
    assert available_devices()[:3] == ["cpu", "cuda:0", "cuda:1"]
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceNotAvailableError, match=r"'cuda:3' was asked for, but there are only 2 CUDA devices "
                                                      r"here, numbered from 0; devices found here: cpu, cuda:0, cuda:1"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:x", "cuda:-1", ["cuda"]])
def test_a_name_torch_does_not_know(device):
    with pytest.raises(DeviceNotAvailableError, match="is not a device name torch understands: expected 'cpu', "
                                                      "'cuda', 'cuda:N'"):
        resolve_device(device)


def test_cpu_and_the_default_need_no_accelerator(no_cuda):
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")


def test_load_and_build_refuse_the_device_before_any_work(no_cuda, tmp_path):
    with pytest.raises(DeviceNotAvailableError, match="no CUDA device"):  # before reading the (absent) weights
        resnest_zoo.load("fcn", "voc", weights=tmp_path / "absent.pth", device="cuda")
    with pytest.raises(DeviceNotAvailableError, match="no CUDA device"):
        resnest_zoo.build("fcn", "voc", device="cuda")
