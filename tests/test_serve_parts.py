"""The server's parts on their own. The dynamic batcher, with a stand-in network that records its calls: equal input
sizes share forward passes up to the batch size, the oldest image never waits longer than ``max_wait`` for
companions, the queue is bounded, a request that times out or is cancelled gives its place back, and the network
never runs on the event loop. The settings and model names, checked before anything loads. The docs' error table."""
from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest

from resnest_zoo.errors import ConfigurationError, UnknownModelError
from resnest_zoo.serving.batching import Batcher, QueueTimeout
from resnest_zoo.serving.models import model_sources
from resnest_zoo.serving.problems import KINDS
from resnest_zoo.serving.settings import ServeSettings

from serving_helpers import DOCS


class Network:
    """Doubles numbers, ``seconds`` per call, recording each call's inputs and thread."""

    def __init__(self, seconds: float = 0.0, fail_on: int | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.calls: list[list[int]] = []
        self.threads: set[int] = set()

    def __call__(self, images: list[int]) -> list[int]:
        self.calls.append(list(images))
        self.threads.add(threading.get_ident())
        time.sleep(self.seconds)
        if self.fail_on in images:
            raise RuntimeError("out of memory")
        return [2 * image for image in images]


def run(coroutine):
    return asyncio.run(coroutine)


async def _started(network: Network, **options) -> Batcher:
    settings = {"max_batch_size": 4, "max_wait": 0.05, "max_queue": 16, **options}
    batcher = Batcher("test", network, **settings)
    batcher.start()
    return batcher


def _far() -> float:
    return asyncio.get_running_loop().time() + 30


async def _ask(batcher: Batcher, image: int, key) -> int:
    ticket = batcher.admit()
    assert ticket is not None
    try:
        return await batcher.predict(ticket, image, key, _far())
    finally:
        ticket.release()


def test_equal_sizes_share_forward_passes_up_to_the_batch_size_off_the_event_loop():
    network = Network(seconds=0.02)

    async def scenario():
        batcher = await _started(network)
        keys = [(48, 64) if i % 3 else (64, 48) for i in range(11)]
        results = await asyncio.gather(*[_ask(batcher, i, key) for i, key in enumerate(keys)])
        await batcher.stop()
        return results, keys, threading.get_ident()

    results, keys, loop_thread = run(scenario())
    assert results == [2 * i for i in range(11)]
    by_key = {i: key for i, key in enumerate(keys)}
    assert all(len({by_key[i] for i in call}) == 1 for call in network.calls)  # one input size per pass
    assert max(len(call) for call in network.calls) == 4 and sum(map(len, network.calls)) == 11
    assert len(network.calls) == 3  # 4 of one size (one pass), 7 of the other (4 + 3)
    assert loop_thread not in network.threads and len(network.threads) == 1


def test_a_lone_image_waits_max_wait_for_companions_then_runs():
    network = Network()

    async def scenario():
        batcher = await _started(network, max_wait=0.2)
        began = time.perf_counter()
        first = asyncio.ensure_future(_ask(batcher, 1, "a"))
        await asyncio.sleep(0.05)
        second = await _ask(batcher, 2, "a")  # joins the first one's batch
        waited = time.perf_counter() - began
        assert await first == 2 and second == 4
        began = time.perf_counter()
        assert await _ask(batcher, 3, "b") == 6  # alone: runs after max_wait
        alone = time.perf_counter() - began
        await batcher.stop()
        return waited, alone

    waited, alone = run(scenario())
    assert network.calls == [[1, 2], [3]]
    assert 0.15 < waited < 1.5 and 0.15 < alone < 1.5


def test_the_queue_is_bounded_and_a_timed_out_or_cancelled_request_gives_its_place_back():
    network = Network(seconds=0.3)

    async def scenario():
        batcher = await _started(network, max_batch_size=1, max_wait=0.0, max_queue=2)
        loop = asyncio.get_running_loop()
        running = asyncio.ensure_future(_ask(batcher, 1, "a"))
        while not network.calls:
            await asyncio.sleep(0.005)
        first, second = batcher.admit(), batcher.admit()
        assert batcher.admit() is None and batcher.queued == 2  # full: a third request is refused at once
        assert batcher.retry_after() >= 1
        cancelled = asyncio.ensure_future(batcher.predict(first, 2, "a", _far()))
        timed = asyncio.ensure_future(batcher.predict(second, 3, "a", loop.time() + 0.1))
        await asyncio.sleep(0.02)
        cancelled.cancel()  # its client went away
        await asyncio.gather(cancelled, return_exceptions=True)
        assert batcher.queued == 1
        with pytest.raises(QueueTimeout, match="waited"):
            await timed
        assert batcher.queued == 0
        assert await running == 2
        first.release()
        second.release()
        third = batcher.admit()
        assert third is not None and await batcher.predict(third, 4, "a", _far()) == 8
        third.release()
        await batcher.stop()

    run(scenario())
    assert network.calls == [[1], [4]]  # the cancelled and timed-out images never ran


def test_requests_in_flight_are_bounded_even_when_their_answers_are_slow_to_go_out():
    network = Network()

    async def scenario():
        batcher = await _started(network, max_batch_size=1, max_wait=0.0, max_queue=2)
        answered = []
        for image in range(4):  # max_queue + 2 x max_batch_size: predicted, answers still being encoded
            ticket = batcher.admit()
            assert ticket is not None
            assert await batcher.predict(ticket, image, "a", _far()) == 2 * image
            answered.append(ticket)
        assert batcher.queued == 0 and batcher.in_flight == 4
        assert batcher.admit() is None  # no more, though the queue is empty
        answered[0].release()
        assert batcher.admit() is not None
        await batcher.stop()

    run(scenario())


def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs():
    network = Network(fail_on=5)

    async def scenario():
        batcher = await _started(network, max_wait=0.05)
        outcome = await asyncio.gather(_ask(batcher, 5, "a"), _ask(batcher, 6, "a"), return_exceptions=True)
        after = await _ask(batcher, 7, "a")
        await batcher.stop()
        return outcome, after

    outcome, after = run(scenario())
    assert all(isinstance(item, RuntimeError) for item in outcome) and after == 14


def test_settings_are_checked():
    assert ServeSettings().max_batch_size == 8 and ServeSettings().max_queue == 64
    for bad in ({"max_batch_size": 0}, {"max_queue": 1.5}, {"timeout": 0}, {"max_wait_ms": -1},
                {"max_upload_mb": float("inf")}, {"alpha": 2}, {"api_key": " "}, {"cors_origins": "http://a"}):
        with pytest.raises(ConfigurationError):
            ServeSettings(**bad)
    with pytest.raises(TypeError, match="max_batch"):
        ServeSettings.make(max_batch=4)


def test_model_names_are_checked_before_anything_loads(tmp_path):
    (tmp_path / "my model").mkdir()
    sources = model_sources(["deeplabv3+/Cityscapes", "fcn/voc"])
    assert [s.name for s in sources] == ["deeplabv3plus/cityscapes", "fcn/voc"]
    assert model_sources({"roads": "fcn/cityscapes"})[0].name == "roads"
    with pytest.raises(UnknownModelError, match="unet"):
        model_sources(["unet/voc"])
    with pytest.raises(ConfigurationError, match="twice|two models"):
        model_sources(["fcn/voc", "FCN/pascal_voc"])
    with pytest.raises(ConfigurationError, match="URL"):
        model_sources([str(tmp_path / "my model")])
    with pytest.raises(ConfigurationError, match="no models"):
        model_sources([])


def test_the_docs_error_table_is_the_servers_own():
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (.+) \|$", DOCS.read_text(), re.M)
    assert rows == [(str(status), kind, meaning) for kind, (status, meaning) in KINDS.items()]
