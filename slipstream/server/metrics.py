"""Prometheus metrics, in a registry of the app's own (several apps may share a process).

What a reader's batcher and engine report carries `group` and `reader` labels; a reader's
series go when the reader is removed.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets from 0.25 ms to 10 s: the interesting range on CPU and GPU.
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "slipstream_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "slipstream_request_duration_seconds",
            "End-to-end handling time in the server",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "slipstream_queue_wait_seconds",
            "Time from queueing to the first batch that ran the request",
            ["group", "reader"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokenization = Histogram(
            "slipstream_tokenization_seconds",
            "Tokenization time per request",
            ["group", "reader"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "slipstream_inference_seconds",
            "Engine time per batch (padding included)",
            ["group", "reader", "bucket"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "slipstream_batch_size",
            "Items per engine batch",
            ["group", "reader", "bucket"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_padded_tokens = Histogram(
            "slipstream_batch_padded_tokens",
            "Padded tokens (items x bucket length) per batch",
            ["group", "reader", "bucket"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.real_tokens = Counter(
            "slipstream_real_tokens", "Real (unpadded) tokens run by the engine", ["group", "reader"], registry=r
        )
        self.padded_tokens = Counter(
            "slipstream_padded_tokens", "Padded tokens run by the engine", ["group", "reader"], registry=r
        )
        self.padding_efficiency = Gauge(
            "slipstream_padding_efficiency", "Real tokens / padded tokens since start", ["group", "reader"], registry=r
        )
        self.items_computed = Counter(
            "slipstream_items_computed", "Items (texts or pairs) run by the engine", ["group", "reader"], registry=r
        )
        self.queue_items = Gauge("slipstream_queue_items", "Items queued", ["group", "reader"], registry=r)
        self.queue_tokens = Gauge("slipstream_queue_tokens", "Tokens queued", ["group", "reader"], registry=r)
        self.rejections = Counter(
            "slipstream_rejections",
            "Requests refused at admission, by reason",
            ["group", "reader", "reason"],
            registry=r,
        )
        self.drops = Counter(
            "slipstream_dropped_items",
            "Queued items dropped before the engine, by reason",
            ["group", "reader", "reason"],
            registry=r,
        )
        self.engine_failures = Counter(
            "slipstream_engine_failures", "Batches the engine failed on", ["group", "reader"], registry=r
        )
        self.ready = Gauge(
            "slipstream_ready", "1 when every reader from the start-up configuration has warmed up", registry=r
        )
        self.reader_ready = Gauge(
            "slipstream_reader_ready", "1 when the reader takes requests", ["group", "reader"], registry=r
        )
        self.batch_timeouts = Counter(
            "slipstream_batch_timeouts",
            "Batches given up after running past batch_timeout_s (a hung engine)",
            ["group", "reader"],
            registry=r,
        )
        self.open_connections = Gauge(
            "slipstream_http_open_connections", "Client connections open, over every listener", registry=r
        )
        self.connections_closed = Counter(
            "slipstream_http_connections_closed",
            "Connections the server closed at the edge, by reason (header_timeout, body_timeout, over_limit)",
            ["reason"],
            registry=r,
        )
        self.chunked_inputs = Counter(
            "slipstream_chunked_inputs", 'Inputs scored with long_text "chunk"', ["group", "reader"], registry=r
        )
        self.chunk_windows = Counter(
            "slipstream_chunk_windows",
            "Windows those inputs took (an input that fits takes one); per input: this / chunked_inputs",
            ["group", "reader"],
            registry=r,
        )

    def reader(self, group: str, reader_id: str) -> GroupMetrics:
        return GroupMetrics(self, group, reader_id)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GroupMetrics:
    """The core's metrics sink (`slipstream.batching.metrics.MetricsSink`) for one reader of a consumer group."""

    def __init__(self, metrics: ServiceMetrics, group: str, reader_id: str) -> None:
        self._m = metrics
        self._labels = (group, reader_id)
        labels = self._labels
        self._queue_wait = metrics.queue_wait.labels(*labels)
        self._queue_items = metrics.queue_items.labels(*labels)
        self._queue_tokens = metrics.queue_tokens.labels(*labels)
        self._real = metrics.real_tokens.labels(*labels)
        self._padded = metrics.padded_tokens.labels(*labels)
        self._efficiency = metrics.padding_efficiency.labels(*labels)
        self._computed = metrics.items_computed.labels(*labels)
        self._tokenization = metrics.tokenization.labels(*labels)
        self._engine_failures = metrics.engine_failures.labels(*labels)
        self._batch_timeouts = metrics.batch_timeouts.labels(*labels)
        self._chunked_inputs = metrics.chunked_inputs.labels(*labels)
        self._chunk_windows = metrics.chunk_windows.labels(*labels)
        self._real_total = 0
        self._padded_total = 0
        self._per_bucket: dict[int, tuple[Histogram, Histogram, Histogram]] = {}
        self._reasons: set[tuple[Counter, str]] = set()

    def batch_ran(self, edge: int, items: int, real_tokens: int, padded_length: int, seconds: float) -> None:
        children = self._per_bucket.get(edge)
        if children is None:
            labels = (*self._labels, str(edge))
            children = self._per_bucket[edge] = (
                self._m.inference.labels(*labels),
                self._m.batch_size.labels(*labels),
                self._m.batch_padded_tokens.labels(*labels),
            )
        inference, batch_size, padded = children
        padded_tokens = items * padded_length
        inference.observe(seconds)
        batch_size.observe(items)
        padded.observe(padded_tokens)
        self._real.inc(real_tokens)
        self._padded.inc(padded_tokens)
        self._computed.inc(items)
        self._real_total += real_tokens
        self._padded_total += padded_tokens
        self._efficiency.set(self._real_total / self._padded_total)

    def tokenized(self, seconds: float) -> None:
        self._tokenization.observe(seconds)

    def queue_waited(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def queue_depth(self, items: int, tokens: int) -> None:
        self._queue_items.set(items)
        self._queue_tokens.set(tokens)

    def dropped(self, reason: str, items: int) -> None:
        self._by_reason(self._m.drops, reason).inc(items)

    def rejected(self, reason: str) -> None:
        self._by_reason(self._m.rejections, reason).inc()

    def engine_failed(self) -> None:
        self._engine_failures.inc()

    def batch_timed_out(self) -> None:
        self._batch_timeouts.inc()

    def chunked(self, inputs: int, windows: int) -> None:
        self._chunked_inputs.inc(inputs)
        self._chunk_windows.inc(windows)

    def _by_reason(self, counter: Counter, reason: str) -> Counter:
        self._reasons.add((counter, reason))
        return counter.labels(*self._labels, reason)

    def forget(self) -> None:
        """Remove every series of this reader (it is gone; its labels must not grow without bound)."""
        m = self._m
        for metric in (
            m.queue_wait,
            m.queue_items,
            m.queue_tokens,
            m.real_tokens,
            m.padded_tokens,
            m.padding_efficiency,
            m.items_computed,
            m.tokenization,
            m.engine_failures,
            m.batch_timeouts,
            m.chunked_inputs,
            m.chunk_windows,
        ):
            _remove(metric, self._labels)
        for edge in self._per_bucket:
            for metric in (m.inference, m.batch_size, m.batch_padded_tokens):
                _remove(metric, (*self._labels, str(edge)))
        for counter, reason in self._reasons:
            _remove(counter, (*self._labels, reason))


def _remove(metric: Counter | Gauge | Histogram, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never observed
        metric.remove(*labels)
