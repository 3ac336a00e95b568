"""The headline numbers: throughput at the latency objective, ratios, service targets."""

from __future__ import annotations

import numpy as np

from benchmarks.loadgen import Point, PointResult
from benchmarks.settings import QUICK, ServerConfig
from benchmarks.stats import summarize_latencies
from benchmarks.suite import ConfigRun, PointRecord, config_summary, idle_added_latency_ms


def _result(
    point: Point, rps: float, p99_ms: float, rejected: int = 0, captured: list[str] | None = None
) -> PointResult:
    # Latencies whose 99th percentile is p99_ms: most at a tenth of it.
    latencies = np.full(200, p99_ms / 10_000)
    latencies[-3:] = p99_ms / 1000
    return PointResult(
        point=point,
        offered_rps=rps,
        achieved_rps=rps,
        sequences_per_s=rps,
        tokens_per_s=rps * 40,
        n_measured=200 + rejected,
        n_ok=200,
        n_rejected=rejected,
        n_errors=0,
        n_timeouts=0,
        latency=summarize_latencies(latencies),
        send_lag_p99_s=0.0,
        client_cpu_s=0.1,
        wall_s=1.0,
        captured=captured or [],
    )


def _run(records: list[tuple[Point, PointResult]], workload: str = "single") -> ConfigRun:
    config = ServerConfig(name="slipstream", label="Slipstream", kind="slipstream", description="")
    return ConfigRun(
        config=config,
        points=[PointRecord(config="slipstream", workload=p.workload, result=r, server=None) for p, r in records],
    )


def open_point(rate: float) -> Point:
    return Point(mode="open", rate=rate)


def test_throughput_at_the_objective_is_the_best_open_loop_rate_that_meets_it() -> None:
    points = [
        (open_point(100), _result(open_point(100), 100, p99_ms=20)),
        (open_point(200), _result(open_point(200), 198, p99_ms=90)),
        (open_point(300), _result(open_point(300), 240, p99_ms=400)),  # past saturation
    ]
    summary = config_summary(_run(points), QUICK)
    assert summary.throughput_at_slo_rps == 198
    assert summary.peak_rps == 240


def test_a_point_with_rejections_does_not_count_as_meeting_the_objective() -> None:
    points = [
        (open_point(100), _result(open_point(100), 100, p99_ms=20)),
        (open_point(200), _result(open_point(200), 150, p99_ms=30, rejected=50)),
    ]
    assert config_summary(_run(points), QUICK).throughput_at_slo_rps == 100


def test_closed_loop_points_never_define_the_headline() -> None:
    closed = Point(mode="closed", concurrency=QUICK.compare_concurrency)
    summary = config_summary(_run([(closed, _result(closed, 500, p99_ms=50))]), QUICK)
    assert summary.throughput_at_slo_rps == 0.0
    assert summary.rps_at_compare_concurrency == 500


def test_idle_added_latency_is_end_to_end_minus_the_servers_engine_time() -> None:
    idle = Point(mode="idle", workload="idle", requests=200)
    result = _result(idle, 30, p99_ms=50, captured=["2.0"] * 150 + ["3.0"] * 50)  # p50 end to end: 5 ms
    added = idle_added_latency_ms(_run([(idle, result)]))
    assert added is not None
    assert added["engine_p50_ms"] == 2.0
    assert added["added_p50_ms"] == added["end_to_end_p50_ms"] - 2.0
