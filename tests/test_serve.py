"""``resnest-zoo serve`` as users meet it: a real server in a subprocess on 127.0.0.1, real HTTP clients, a real
browser. One server for the module holds two models: ``fcn/voc`` (its checkpoint from a local mirror folder, through
the cache, offline) and a small saved model that predicts in milliseconds (for the load and browser tests).

Every endpoint and answer format; masks equal to ``model.predict``'s, byte for byte as PNG; 16 clients sending 100
requests of mixed photos (all answered, all right, batches of more than one image seen in ``/metrics``); every bad
input answered with a JSON 4xx and the next request served; the page driven in headless Chromium.
"""
from __future__ import annotations

import base64
import copy
import http.client
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

import resnest_zoo
from resnest_zoo.catalogue import get_entry

from serving_helpers import COMMAND, DOCS, Server, docs_curl_commands, encoded, photo, run_docs_command, small_model

SMALL = "coast"  # the saved model's folder, hence its name on the server


@pytest.fixture(scope="module")
def setup(published_checkpoint, tmp_path_factory):
    """The running server, the fcn/voc checkpoint file, and the saved model's folder."""
    folder = tmp_path_factory.mktemp("serve")
    checkpoint, _ = published_checkpoint("fcn", "voc")
    mirror = folder / "mirror"
    mirror.mkdir()
    try:
        os.link(checkpoint, mirror / get_entry("fcn", "voc").filename)
    except OSError:
        shutil.copyfile(checkpoint, mirror / get_entry("fcn", "voc").filename)
    saved = small_model().save_pretrained(folder / SMALL)
    server = Server(["-m", "fcn/voc", "-m", str(saved), "--device", "cpu", "--max-upload-mb", "2"],
                    folder / "server.log",
                    env={"RESNEST_ZOO_MIRROR": str(mirror), "RESNEST_ZOO_CACHE": str(folder / "cache")})
    try:
        server.readiness = server.wait_ready()
        yield server, checkpoint, saved
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(setup):
    return setup[0]


@pytest.fixture(scope="module")
def small(setup):
    """The saved model as the server runs it (BatchNorm folded), loaded here."""
    return resnest_zoo.from_pretrained(setup[2], device="cpu", optimize=True)


def _png(prediction) -> bytes:
    buffer = io.BytesIO()
    prediction.to_pil().save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------- probes, models

def test_probes_say_not_ready_while_loading_then_ready(server):
    assert server.readiness[0] == 503 and server.readiness[-1] == 200  # the checkpoint took a while to load
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/readyz").json() == {"status": "ready", "models": ["fcn/voc", SMALL]}
    assert re.search(r'"GET /readyz" 503 ', server.log())  # access log: method, path, status, latency


def test_models_lists_names_classes_and_palettes(server, small):
    models = {m["name"]: m for m in server.get("/v1/models").json()["models"]}
    voc = get_entry("fcn", "voc").config
    assert models["fcn/voc"]["classes"] == list(voc.class_names) and len(models["fcn/voc"]["classes"]) == 21
    assert models["fcn/voc"]["palette"] == [list(c) for c in voc.palette]
    assert models["fcn/voc"]["source"] == "catalogue" and models["fcn/voc"]["device"] == "cpu"
    assert models[SMALL]["classes"] == list(small.config.class_names) and models[SMALL]["source"] == "saved"
    assert models[SMALL]["predict"] == f"/v1/models/{SMALL}/predict"


# ------------------------------------------------------------------------------------------ predictions

def test_catalogue_masks_equal_predict_byte_for_byte_in_every_format(server, published_checkpoint, tmp_path):
    _, published = published_checkpoint("fcn", "voc")  # the model in the server's checkpoint file
    thin = photo(512, 4, seed=1)  # thin: its long side reaches the 2048-pixel limit first, the input is 16 x 2048
    body = encoded(thin, "JPEG", quality=90)
    (tmp_path / "thin.jpg").write_bytes(body)
    model = resnest_zoo.optimize_for_inference(copy.deepcopy(published))  # BatchNorm folded, as the server loads it
    expected = model.predict(tmp_path / "thin.jpg")  # before asking the server: two networks at once on 2 cores crawl
    expected.save(tmp_path / "expected.png")
    url = f"{server.url}/v1/models/fcn/voc/predict"  # one connection per thread (a Session is not thread-safe)
    asks = [lambda: requests.post(url, data=body, headers={"Content-Type": "image/jpeg"}, timeout=300),
            lambda: requests.post(url, params={"format": "json"}, files={"image": ("thin.jpg", body, "image/jpeg")},
                                  timeout=300),
            lambda: requests.post(url, params={"format": "overlay"}, data=body, timeout=300)]
    with ThreadPoolExecutor(3) as pool:  # at once: they may share a forward pass
        raw, answer, overlay = [future.result() for future in [pool.submit(ask) for ask in asks]]

    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.content == (tmp_path / "expected.png").read_bytes()  # exactly what Prediction.save writes
    document = answer.json()
    assert answer.status_code == 200 and (document["width"], document["height"]) == (512, 4)
    assert base64.b64decode(document["mask_png"]) == raw.content
    assert [(c["name"], c["share"]) for c in document["classes"]] == expected.summary()
    assert all(c["color"] == list(expected.palette[c["id"]]) for c in document["classes"])
    assert overlay.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(overlay.content))), np.asarray(expected.overlay(0.5)))


def test_overlay_opacity_and_formats_of_a_saved_model(server, small):
    picture = photo(120, 90, seed=2)
    expected = small.predict(picture)
    for alpha in (0.0, 0.8):
        answer = server.post(f"/v1/models/{SMALL}/predict", params={"format": "overlay", "alpha": alpha},
                             data=encoded(picture))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), np.asarray(expected.overlay(alpha)))
    assert server.post(f"/v1/models/{SMALL}/predict", data=encoded(picture)).content == _png(expected)


def test_sixteen_clients_a_hundred_requests_all_right_and_batched(server, small):
    pictures = [photo(80, 60, 10), photo(160, 120, 11), photo(60, 80, 12), photo(100, 50, 13),
                photo(96, 72, 14), photo(50, 100, 15)]  # four network input sizes among them
    bodies = [encoded(p, "PNG") if i % 2 else encoded(p, "JPEG", quality=92) for i, p in enumerate(pictures)]
    expected = [_png(small.predict(Image.open(io.BytesIO(body)))) for body in bodies]
    before = _batch_histogram(server)

    def client(number: int) -> list[tuple[int, bool]]:
        outcomes = []
        with requests.Session() as session:
            for request in range(number, 100, 16):
                which = request % len(bodies)
                answer = session.post(f"{server.url}/v1/models/{SMALL}/predict", data=bodies[which], timeout=60)
                outcomes.append((answer.status_code, answer.content == expected[which]))
        return outcomes

    with ThreadPoolExecutor(16) as pool:
        outcomes = [item for part in pool.map(client, range(16)) for item in part]
    assert len(outcomes) == 100
    assert all(status == 200 for status, _ in outcomes), [s for s, _ in outcomes if s != 200]
    assert all(right for _, right in outcomes)
    after = _batch_histogram(server)
    batches, single = after[0] - before[0], after[1] - before[1]
    assert batches < 100 and single < batches  # forward passes shared: fewer passes than requests
    metrics = server.get("/metrics").text
    assert re.search(rf'resnest_zoo_requests_total{{model="{SMALL}",status="200"}} \d+', metrics)
    assert f'resnest_zoo_queue_depth{{model="{SMALL}"}} 0.0' in metrics
    assert f'resnest_zoo_request_seconds_count{{model="{SMALL}"}}' in metrics


def _batch_histogram(server) -> tuple[float, float]:
    """(batches so far, batches of one image so far) of the small model, from /metrics."""
    text = server.get("/metrics").text
    count = float(re.search(rf'resnest_zoo_batch_size_count{{model="{SMALL}"}} (\S+)', text).group(1))
    ones = float(re.search(rf'resnest_zoo_batch_size_bucket{{le="1.0",model="{SMALL}"}} (\S+)', text).group(1))
    return count, ones


# ------------------------------------------------------------------------------------------- bad input

def _bomb() -> bytes:
    """A small PNG of more pixels than Pillow's MAX_IMAGE_PIXELS."""
    side = int(Image.MAX_IMAGE_PIXELS ** 0.5) + 100
    return encoded(np.zeros((side, side), dtype=bool))


def _raw_exchange(server, head: bytes, body_parts: list[bytes]) -> tuple[int, bytes]:
    """Send a request by hand (headers, then body parts while the server lets us), then read its answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head)
        try:
            for part in body_parts:
                connection.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is waiting
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        return reply.status, reply.read()


def test_every_bad_input_gets_a_json_4xx_and_the_next_request_is_served(server, small):
    predict = f"/v1/models/{SMALL}/predict"
    good = encoded(photo(80, 60, 3))
    cases = {
        "not an image": (server.post(predict, data=b"hello, this is text"), 422, "invalid_image", "not an image"),
        "truncated": (server.post(predict, data=good[: len(good) // 2]), 422, "invalid_image", "truncated"),
        "empty": (server.post(predict, data=b""), 400, "empty_body", "empty"),
        "bomb": (server.post(predict, data=_bomb()), 422, "invalid_image", "decompression bomb"),
        "no field": (server.post(predict, files={"photo": ("a.png", good)}), 400, "missing_image", "'photo'"),
        "empty field": (server.post(predict, files={"image": ("a.png", b"")}), 400, "empty_body", "empty"),
        "bad form": (server.post(predict, data=b"--x\r\nnonsense", headers={
            "Content-Type": "multipart/form-data; boundary=zz"}), 400, "bad_request", "multipart"),
        "unknown model": (server.post("/v1/models/unet/voc/predict", data=good), 404, "unknown_model",
                          "fcn/voc, coast"),
        "unknown path": (server.get("/v2/everything"), 404, "not_found", "/v2/everything"),
        "wrong method": (server.get(predict), 405, "method_not_allowed", "use POST"),
        "format": (server.post(predict, params={"format": "gif"}, data=good), 400, "invalid_parameter", "json"),
        "alpha": (server.post(predict, params={"format": "overlay", "alpha": 2}, data=good), 400,
                  "invalid_parameter", "alpha"),
        "page asset": (server.get("/page/../../etc/passwd"), 404, "not_found", ""),
    }
    for case, (answer, status, kind, words) in cases.items():
        assert answer.status_code == status, (case, answer.text)
        document = answer.json()
        assert set(document) == {"error", "detail"} and document["error"] == kind, (case, document)
        assert words in document["detail"] and "\n" not in document["detail"], (case, document)
        assert "Traceback" not in answer.text
    assert cases["wrong method"][0].headers["allow"] == "POST"

    limit = 2 * 1024 * 1024
    status, body = _raw_exchange(server, (  # announced too large: refused before the body is sent
        f"POST {predict} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {limit + 1}\r\n\r\n"
    ).encode(), [])
    assert status == 413 and b'"payload_too_large"' in body and b"2 MiB" in body
    chunk = b"\0" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (limit // len(chunk) + 8) + [b"0\r\n\r\n"]
    status, body = _raw_exchange(server, (  # chunked, no length: refused once past the limit
        f"POST {predict} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").encode(), chunks)
    assert status == 413 and b"still arriving" in body

    answer = server.post(predict, data=good)  # the server is unharmed
    assert answer.status_code == 200 and answer.content == _png(small.predict(Image.open(io.BytesIO(good))))


# ---------------------------------------------------------------------------------------- the page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not "
                    "installed (apt-get install chromium chromium-driver; .ci/run does)")
def test_the_page_segments_a_photo_in_headless_chromium(server, small, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    picture = photo(160, 120, seed=4)
    (tmp_path / "beach.jpg").write_bytes(encoded(picture, "JPEG", quality=95))
    expected = small.predict(tmp_path / "beach.jpg")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,800", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"{server.url}/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
        Select(driver.find_element(By.ID, "model")).select_by_value(SMALL)
        driver.find_element(By.ID, "file").send_keys(str(tmp_path / "beach.jpg"))
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
        legend = [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#legend .class-name")]
        shares = [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#legend .share")]
        assert legend == [name for name, _ in expected.summary()] and len(legend) >= 2
        assert shares == [f"{share * 100:.1f} %" for _, share in expected.summary()]
        assert driver.find_element(By.ID, "overlay").get_attribute("data-ready") == "true"
        assert driver.execute_script("return document.getElementById('mask').naturalWidth") == 160
        link = driver.find_element(By.ID, "download")
        assert link.get_attribute("download") == "beach_mask.png"
        assert base64.b64decode(link.get_attribute("href").split(",", 1)[1]) == _png(expected)
        driver.save_screenshot(str(tmp_path / "page.png"))
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not severe, severe  # nothing refused, nothing missing (every asset comes from the server)
    finally:
        driver.quit()
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert re.search(r'"GET /page/app\.js" 200', server.log())


# ------------------------------------------------------------------------------------------- the docs

def test_every_curl_command_of_the_docs_works_and_every_metric_named_there_exists(server, tmp_path):
    (tmp_path / "street.jpg").write_bytes(encoded(photo(160, 120, seed=7), "JPEG", quality=90))
    commands = [command for command in docs_curl_commands() if "Authorization" not in command]  # the rest: keyed
    assert len(commands) >= 8
    for command in commands:
        done = run_docs_command(command, server, SMALL, tmp_path)
        assert done.returncode == 0, (command, done.stderr)
    assert Image.open(tmp_path / "street_mask.png").mode == "P"
    assert Image.open(tmp_path / "street_overlay.png").size == (160, 120)
    metrics = server.get("/metrics").text
    named = set(re.findall(r"`(resnest_zoo_[a-z_]+)", DOCS.read_text()))
    assert len(named) >= 7 and all(re.search(rf"^# TYPE {name} ", metrics, re.M) for name in named), named


# ------------------------------------------------------------------------------------------- the process

def test_no_request_ever_got_a_server_error(server):
    log = server.log()
    assert "Traceback" not in log and not re.search(r'" 5\d\d ', log.replace('" 503 ', '" ')), log[-3000:]


def test_a_port_in_use_and_a_model_that_cannot_load_end_the_command_with_one_line(server, tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RESNEST_ZOO_")}
    environment.update({"RESNEST_ZOO_OFFLINE": "1", "RESNEST_ZOO_CACHE": str(tmp_path / "empty-cache")})
    port = server.url.rsplit(":", 1)[1]
    busy = subprocess.run([*COMMAND, "serve", "-m", "fcn/voc", "--port", port], capture_output=True, text=True,
                          env=environment, timeout=120)
    assert busy.returncode == 2 and f"error: cannot listen on 127.0.0.1:{port}" in busy.stderr, busy.stderr
    missing = subprocess.run([*COMMAND, "serve", "-m", "fcn/voc", "--port", "0", "--device", "cpu"],
                             capture_output=True, text=True, env=environment, timeout=120)
    assert missing.returncode == 3, missing.stderr  # the checkpoint cannot be obtained offline
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fcn" in errors[0] and "Traceback" not in missing.stderr


def test_importing_the_package_and_the_command_does_not_import_the_server():
    code = ("import sys, resnest_zoo, resnest_zoo.cli; "
            "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'prometheus_client') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
