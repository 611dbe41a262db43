"""Dynamic batching for one model: requests whose images resize to the same network input share a forward pass.

A :class:`Batcher` lives on the server's event loop and owns one worker thread, where the network runs (never on
the event loop). A request first takes a place in the model's bounded queue (:meth:`Batcher.admit`: ``None`` when
the queue is full, so the server answers ``503`` at once instead of letting memory and latency grow), then hands
its decoded image to :meth:`Batcher.predict` and awaits the result. Requests in flight (queued, running, or having
their answers encoded) are bounded too, so that a network faster than the encoding of its answers cannot make
finished predictions pile up.

The dispatcher takes the oldest waiting image and the images waiting with the same input size, up to
``max_batch_size``. If fewer are waiting it gives companions until ``max_wait`` after the oldest one arrived, then
runs what it has: one call of ``run(images)`` in the worker thread (``model.predict(images, batch_size=len)``).
While a batch runs, the next ones gather. Images of other sizes are not held up by a size that keeps arriving:
the oldest image always goes next. A request that leaves (its client disconnected, or its time ran out) before its
forward pass gives its place back at once.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batcher", "Ticket", "QueueTimeout"]


class QueueTimeout(TimeoutError):
    """A request's time ran out before its forward pass began (the server answers ``504``)."""


class Ticket:
    """A request admitted for a model: its place in the queue, from admission until its forward pass starts (or it
    leaves), and its share of the model's requests in flight, until the request ends."""

    __slots__ = ("_batcher", "_queued", "_in_flight")

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._queued = True
        self._in_flight = True

    def leave_queue(self) -> None:
        """Out of the queue (its forward pass starts, or it gave up waiting); idempotent."""
        if self._queued:
            self._queued = False
            self._batcher._queued -= 1
            self._batcher._publish_depth()

    def release(self) -> None:
        """The request has ended (answered, refused or abandoned): every place it held goes back; idempotent."""
        self.leave_queue()
        if self._in_flight:
            self._in_flight = False
            self._batcher._in_flight -= 1


@dataclass(eq=False)
class _Pending:
    image: Any
    key: Hashable
    future: asyncio.Future
    arrived: float
    ticket: Ticket
    started: bool = field(default=False)


class Batcher:
    """Bounded queue, batching dispatcher and worker thread of one model (see the module docs).

    Args:
        name: the model's name (thread name, metric labels).
        run: called in the worker thread with a list of images of one input size; returns one result per image,
            in order. An exception fails every request of that batch.
        max_batch_size, max_wait, max_queue: images per forward pass; seconds the oldest image waits for
            companions; requests admitted and not yet running. Requests in flight -- queued, running, or having
            their answers encoded -- are also bounded, by ``max_queue + 2 * max_batch_size``, so that answers
            slower to encode than the network is to compute cannot pile up either.
        metrics: a :class:`~resnest_zoo.serving.metrics.ServerMetrics` to record batches and the queue in.
    """

    def __init__(self, name: str, run: Callable[[list[Any]], Sequence[Any]], *, max_batch_size: int,
                 max_wait: float, max_queue: int, metrics: Any = None) -> None:
        self.name = name
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self._metrics = metrics
        self._groups: dict[Hashable, deque[_Pending]] = {}
        self._queued = 0
        self._in_flight = 0
        self.max_in_flight = max_queue + 2 * max_batch_size
        self._running = 0
        self._seconds_per_image: float | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"resnest-zoo-{name}")
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the dispatcher on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop the dispatcher; a forward pass in progress finishes first; requests still waiting fail."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for group in self._groups.values():
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the server stopped before this image was predicted"))
        self._groups.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    # --------------------------------------------------------------------------------------------- requests
    def admit(self) -> Ticket | None:
        """A place in the queue, or None when ``max_queue`` requests already hold one (or ``max_in_flight`` requests
        are in flight). The caller must :meth:`Ticket.release` it when the request ends."""
        if self._queued >= self.max_queue or self._in_flight >= self.max_in_flight:
            return None
        self._queued += 1
        self._in_flight += 1
        self._publish_depth()
        return Ticket(self)

    @property
    def queued(self) -> int:
        """Requests admitted and not yet in a forward pass."""
        return self._queued

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet ended."""
        return self._in_flight

    def retry_after(self) -> int:
        """Whole seconds after which a refused client may find room: the time to run what is queued and running
        (from the recent seconds per image), at least 1."""
        per_image = self._seconds_per_image or 0.0
        return max(1, math.ceil((self._queued + self._running) * per_image))

    async def predict(self, ticket: Ticket, image: Any, key: Hashable, deadline: float) -> Any:
        """The result of ``run`` for ``image`` (whose input size is ``key``), batched with others of that size.

        ``deadline`` (``loop.time()`` seconds) bounds the wait for the forward pass: past it, a request not yet
        running raises :class:`QueueTimeout` and leaves the queue; one already running is awaited to the end. If
        the caller is cancelled (its client went away) before the forward pass, it leaves the queue too.
        """
        loop = asyncio.get_running_loop()
        pending = _Pending(image, key, loop.create_future(), loop.time(), ticket)
        pending.future.add_done_callback(_retrieve)  # a result nobody awaits any more is not an error to log
        self._groups.setdefault(key, deque()).append(pending)
        self._wake()
        try:
            try:
                return await asyncio.wait_for(asyncio.shield(pending.future), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                if not pending.started:
                    waited = loop.time() - pending.arrived
                    raise QueueTimeout(f"waited {waited:.1f} s in {self.name}'s queue without reaching a forward "
                                       f"pass") from None
                return await pending.future
        finally:
            if not pending.started:
                self._withdraw(pending)

    # ------------------------------------------------------------------------------------------- internals
    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _withdraw(self, pending: _Pending) -> None:
        group = self._groups.get(pending.key)
        if group is not None and pending in group:
            group.remove(pending)
            if not group:
                del self._groups[pending.key]
            self._wake()  # the oldest image may have changed
        pending.ticket.leave_queue()

    def _oldest(self) -> _Pending | None:
        heads = [group[0] for group in self._groups.values() if group]
        return min(heads, key=lambda pending: pending.arrived) if heads else None

    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(self.name).set(self._queued)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            oldest = self._oldest()
            if oldest is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group = self._groups[oldest.key]
            left = oldest.arrived + self.max_wait - loop.time()
            if len(group) < self.max_batch_size and left > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    pass
                continue  # look again: companions came, the oldest left, or the wait is over
            batch = [group.popleft() for _ in range(min(len(group), self.max_batch_size))]
            if not group:
                del self._groups[oldest.key]
            await self._forward(loop, batch)

    async def _forward(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        for pending in batch:
            pending.started = True
            pending.ticket.leave_queue()  # into the forward pass
        self._set_running(len(batch))
        began = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run, [pending.image for pending in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(batch)} images gave {len(results)} results")
        except Exception as exc:  # noqa: BLE001 -- every request of the batch gets the failure, the loop goes on
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        else:
            for pending, result in zip(batch, results):
                if not pending.future.done():
                    pending.future.set_result(result)
        finally:
            seconds = time.perf_counter() - began
            self._set_running(0)
            per_image = seconds / len(batch)
            self._seconds_per_image = per_image if self._seconds_per_image is None else (
                0.8 * self._seconds_per_image + 0.2 * per_image)
            if self._metrics is not None:
                self._metrics.batch_size.labels(self.name).observe(len(batch))
                self._metrics.batch_seconds.labels(self.name).observe(seconds)
            for pending in batch:
                pending.image = None  # the pixels are no longer needed

    def _set_running(self, count: int) -> None:
        self._running = count
        if self._metrics is not None:
            self._metrics.running.labels(self.name).set(count)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
