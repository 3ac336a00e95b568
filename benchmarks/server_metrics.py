"""What the server says about a benchmark point: deltas of its Prometheus /metrics.

Scraped before and after each point, so the batch-size and padding numbers
belong to that point's load alone. Metric names are the service's
(`slipstream/server/metrics.py`); a server without them (the pipeline
baseline) simply has no server metrics.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import msgspec
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Histogram(msgspec.Struct, frozen=True, kw_only=True):
    upper_bounds: list[float]  # finite bucket upper edges ("le"); JSON has no infinity
    counts: list[float]  # observations per bucket (not cumulative); one more than bounds: the last is "above"
    total: float
    count: float

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class ServerMetrics(msgspec.Struct, frozen=True, kw_only=True):
    batches: int
    items: int
    mean_batch_size: float | None
    padding_efficiency: float | None  # real tokens / padded tokens
    batch_size: Histogram
    padded_tokens_per_batch: Histogram
    inference_s_per_batch: Histogram
    queue_wait_s: Histogram
    tokenization_s: Histogram
    request_duration_s: Histogram
    rejections: int
    drops: int


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def _summed(samples: Samples, name: str, by: str | None = None) -> dict[str, float]:
    """Values of one sample name summed over all labels but `by`."""
    sums: dict[str, float] = defaultdict(float)
    for (sample_name, labels), value in samples.items():
        if sample_name == name:
            sums[dict(labels).get(by, "") if by else ""] += value
    return sums


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def _histogram(before: Samples, after: Samples, name: str) -> Histogram:
    cumulative = _delta(_summed(after, f"{name}_bucket", by="le"), _summed(before, f"{name}_bucket", by="le"))
    bounds = sorted(cumulative, key=float)
    running = [cumulative[b] for b in bounds]
    counts = [running[0]] + [b - a for a, b in itertools.pairwise(running)] if running else []
    return Histogram(
        upper_bounds=[float(b) for b in bounds if float(b) != float("inf")],
        counts=counts,
        total=_delta(_summed(after, f"{name}_sum"), _summed(before, f"{name}_sum")).get("", 0.0),
        count=_delta(_summed(after, f"{name}_count"), _summed(before, f"{name}_count")).get("", 0.0),
    )


def _counter(before: Samples, after: Samples, name: str) -> float:
    return _delta(_summed(after, f"{name}_total"), _summed(before, f"{name}_total")).get("", 0.0)


def difference(before: Samples, after: Samples) -> ServerMetrics | None:
    """The server's view of what happened between two scrapes; None if it has no Slipstream metrics."""
    if not any(name == "slipstream_batch_size_count" for name, _ in after):
        return None
    batch_size = _histogram(before, after, "slipstream_batch_size")
    real = _counter(before, after, "slipstream_real_tokens")
    padded = _counter(before, after, "slipstream_padded_tokens")
    return ServerMetrics(
        batches=int(batch_size.count),
        items=int(_counter(before, after, "slipstream_items_computed")),
        mean_batch_size=batch_size.mean,
        padding_efficiency=real / padded if padded else None,
        batch_size=batch_size,
        padded_tokens_per_batch=_histogram(before, after, "slipstream_batch_padded_tokens"),
        inference_s_per_batch=_histogram(before, after, "slipstream_inference_seconds"),
        queue_wait_s=_histogram(before, after, "slipstream_queue_wait_seconds"),
        tokenization_s=_histogram(before, after, "slipstream_tokenization_seconds"),
        request_duration_s=_histogram(before, after, "slipstream_request_duration_seconds"),
        rejections=int(_counter(before, after, "slipstream_rejections")),
        drops=int(_counter(before, after, "slipstream_dropped_items")),
    )
