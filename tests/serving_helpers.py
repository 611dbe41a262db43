"""Shared by the serving tests and the serving benchmark: a small saved model that predicts in milliseconds on a CPU,
small photos, and ``resnest-zoo serve`` started as a subprocess on 127.0.0.1 (stopped and reaped afterwards)."""
from __future__ import annotations

import dataclasses
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

from resnest_zoo.catalogue import get_entry
from resnest_zoo.config import ModelConfig
from resnest_zoo.models.segmentor import Segmentor, build_segmentor

from conftest import randomize_batchnorm

COMMAND = [sys.executable, "-m", "resnest_zoo"]
"""``resnest-zoo`` as this interpreter runs it (also where the package is not installed, only on the path)."""
DOCS = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
CLASSES = ("sea", "sand", "rock")
PALETTE = ((20, 60, 200), (220, 190, 90), (90, 90, 90))
RESIZE = (64, 48)


def small_model(seed: int = 3) -> Segmentor:
    """FCN on ResNeSt-50 at output stride 32, predicting at most 64 x 48 pixels, three classes of its own, seeded
    random weights and BatchNorm statistics (seed 3 predicts two classes on the photos below): a forward pass takes
    milliseconds on a CPU."""
    config: ModelConfig = get_entry("fcn", "voc").config
    config = dataclasses.replace(
        config, backbone=dataclasses.replace(config.backbone, arch="resnest50", output_stride=32),
        preprocessing=dataclasses.replace(config.preprocessing, resize=RESIZE),
    ).with_classes(CLASSES, PALETTE)
    torch.manual_seed(seed)
    model = build_segmentor(config)
    return randomize_batchnorm(model, seed).eval()


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A picture with gradients and blocks of colour (so that several classes are predicted)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x * 3 + y) % 256], -1)
    for _ in range(3):
        top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
        image[top:top + height // 3, left:left + width // 3] = rng.integers(0, 255, 3)
    return image.astype(np.uint8)


def encoded(image: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


class Server:
    """``resnest-zoo serve ARGS --port 0`` in a subprocess; its log goes to a file, its URL is read from the log."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, api_key: str | None = None,
                 isolated: bool = True):
        """``isolated``: no resnest_zoo variables from this environment, and offline (the tests); else this
        process's environment (the benchmark). ``env`` is added in both cases."""
        environment = dict(os.environ)
        if isolated:
            environment = {k: v for k, v in environment.items() if not k.startswith(("RESNEST_ZOO_", "HF_HUB_OFFLINE"))}
            environment.update({"RESNEST_ZOO_OFFLINE": "1", "RESNEST_ZOO_RETRIES": "0"})
        environment.update({"NO_PROXY": "127.0.0.1", **(env or {})})
        self.log_path = log
        self._log = open(log, "w")
        self.process = subprocess.Popen([*COMMAND, "serve", *args, "--host", "127.0.0.1", "--port", "0"],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=environment)
        self.session = requests.Session()
        if api_key is not None:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.log())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"the server did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> list[int]:
        """Poll ``/readyz`` until 200; the statuses seen, in order (503s while the models load)."""
        seen = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status = requests.get(f"{self.url}/readyz", timeout=5).status_code
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == 200:
                return seen
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise RuntimeError(f"the server was not ready in {timeout} s:\n{self.log()}")

    def get(self, path: str, **options) -> requests.Response:
        return self.session.get(f"{self.url}{path}", timeout=options.pop("timeout", 60), **options)

    def post(self, path: str, **options) -> requests.Response:
        return self.session.post(f"{self.url}{path}", timeout=options.pop("timeout", 60), **options)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (killed after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.session.close()
        self._log.close()
        return self.process.returncode


def docs_curl_commands() -> list[str]:
    """Every ``curl`` command of docs/serving.md's bash blocks (continuation lines joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOCS.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("curl "):
                commands.append(line.strip())
    return commands


def run_docs_command(command: str, server: Server, model: str, folder: Path,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``command`` from the docs run by bash in ``folder`` (which holds ``street.jpg``) against ``server``, as
    serving ``model`` under the docs' model name; ``curl --fail``, so an HTTP error is a failed command."""
    adapted = (command.replace("http://127.0.0.1:8000", server.url).replace("deeplabv3plus/cityscapes", model)
               .replace("curl ", "curl --fail --silent --show-error ", 1))
    return subprocess.run(["bash", "-c", adapted], cwd=folder, capture_output=True, env={**os.environ, **(env or {})},
                          timeout=120)
