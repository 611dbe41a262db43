"""What ``GET /metrics`` shows, in Prometheus' text format (``prometheus-client``), one registry per app.

* ``resnest_zoo_requests_total{model, status}``: prediction requests answered, by model and HTTP status (``499``:
  the client went away first);
* ``resnest_zoo_request_seconds{model}``: their latency, arrival to answer (histogram);
* ``resnest_zoo_batch_size{model}`` and ``resnest_zoo_batch_seconds{model}``: images per forward pass and the time
  a batch takes, decoding of the answers excluded (histograms);
* ``resnest_zoo_queue_depth{model}``: requests admitted and not yet in a forward pass (at most ``--max-queue``);
* ``resnest_zoo_images_running{model}``: images in the forward pass now;
* ``resnest_zoo_ready``: 1 once every model is loaded.
"""
from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServerMetrics", "UNKNOWN_MODEL"]

UNKNOWN_MODEL = "unknown"
"""The ``model`` label of requests for a model this server does not have (their names are not labels: a client
must not be able to grow the metrics without bound)."""

_LATENCY_BUCKETS = (0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
                    3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)  # about x1.5 apart: quantiles within 25%
_BATCH_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class ServerMetrics:
    """The server's counters, histograms and gauges (see the module docs), in a registry of their own."""

    def __init__(self, models: Sequence[str], max_batch_size: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("resnest_zoo_requests", "Prediction requests answered, by model and HTTP status",
                                ["model", "status"], registry=r)
        self.latency = Histogram("resnest_zoo_request_seconds", "Prediction latency, arrival to answer, in seconds",
                                 ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        sizes = [size for size in _BATCH_SIZES if size < max_batch_size] + [max_batch_size]
        self.batch_size = Histogram("resnest_zoo_batch_size", "Images per forward pass", ["model"],
                                    buckets=sizes, registry=r)
        self.batch_seconds = Histogram("resnest_zoo_batch_seconds", "Seconds per batch (forward pass and labels)",
                                       ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("resnest_zoo_queue_depth", "Requests admitted and not yet in a forward pass",
                                 ["model"], registry=r)
        self.running = Gauge("resnest_zoo_images_running", "Images in the forward pass now", ["model"], registry=r)
        self.ready = Gauge("resnest_zoo_ready", "1 once every model is loaded, else 0", registry=r)
        for name in models:  # every series exists from the start, at 0
            self.queue_depth.labels(name).set(0)
            self.running.labels(name).set(0)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
