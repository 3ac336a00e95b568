"""Server metrics per benchmark point: the difference of two /metrics scrapes."""

from __future__ import annotations

import pytest

from benchmarks import server_metrics
from slipstream.server.metrics import ServiceMetrics


def test_the_difference_covers_only_what_happened_between_scrapes() -> None:
    metrics = ServiceMetrics()
    group = metrics.reader("primary", "primary-reader")
    group.batch_ran(edge=64, items=8, real_tokens=300, padded_length=64, seconds=0.010)  # before the point
    before = server_metrics.parse(metrics.render().decode())

    group.batch_ran(edge=16, items=4, real_tokens=40, padded_length=16, seconds=0.002)
    group.batch_ran(edge=32, items=2, real_tokens=48, padded_length=32, seconds=0.003)
    group.rejected("queue_full")
    after = server_metrics.parse(metrics.render().decode())

    delta = server_metrics.difference(before, after)
    assert delta is not None
    assert delta.batches == 2 and delta.items == 6
    assert delta.mean_batch_size == pytest.approx(3.0)
    assert delta.padding_efficiency == pytest.approx((40 + 48) / (4 * 16 + 2 * 32))
    assert delta.inference_s_per_batch.total == pytest.approx(0.005)
    assert delta.rejections == 1
    assert len(delta.batch_size.counts) == len(delta.batch_size.upper_bounds) + 1  # the last counts "above"
    counts = dict(zip(delta.batch_size.upper_bounds, delta.batch_size.counts, strict=False))
    assert counts[2.0] == 1 and counts[4.0] == 1 and counts[8.0] == 0
    assert sum(delta.batch_size.counts) == delta.batch_size.count == 2


def test_a_server_without_slipstream_metrics_has_none() -> None:
    assert server_metrics.difference({}, {}) is None
