"""`python -m benchmarks.ray_proxy`: the three servers it compares, and its table of medians over rounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.loadgen import Point, PointResult
from benchmarks.ray_proxy import Measurement, command, session_cpu_s, table
from benchmarks.stats import summarize_latencies


def _result(rps: float, p50_ms: float, captured: list[str] | None = None) -> PointResult:
    return PointResult(
        point=Point(mode="closed", concurrency=16),
        offered_rps=rps,
        achieved_rps=rps,
        sequences_per_s=rps,
        tokens_per_s=rps * 40,
        n_measured=100,
        n_ok=100,
        n_rejected=0,
        n_errors=0,
        n_timeouts=0,
        latency=summarize_latencies(np.full(100, p50_ms / 1000)),
        send_lag_p99_s=0.0,
        client_cpu_s=0.1,
        wall_s=1.0,
        captured=captured or [],
    )


def test_the_same_artifact_through_slipstream_serve_and_through_ray_with_one_and_two_replicas():
    artifact = Path("/a")
    assert command("serve", artifact, 9)[2:5] == ["slipstream.cli", "serve", "/a"]
    ray_two = command("ray-2", artifact, 9)
    assert ray_two[2:5] == ["slipstream.cli", "ray", "/a"]
    assert ray_two[ray_two.index("--replicas") + 1] == "2" and ray_two[ray_two.index("--replica-cpus") + 1] == "0.5"


def test_the_table_reports_medians_over_rounds_and_ratios_to_plain_serve():
    measurements = [
        Measurement(
            config=config,
            round=r,
            closed=_result(rps * (1 + r % 2 / 10), 20),
            idle=_result(1, idle, captured=["4.0", "4.5", "3.5"]),
            cpu_ms_per_request=idle * 2,
            start_s=1,
            info={},
        )
        for r in range(3)
        for config, rps, idle in (("serve", 100.0, 5.0), ("ray-1", 80.0, 6.0), ("ray-2", 90.0, 6.5))
    ]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table(measurements).splitlines()[2:]}
    assert rows["serve"][1:3] == ["100.0", "1.00"]
    assert rows["ray-1"][1:3] == ["80.0", "0.80"]
    assert rows["ray-2"][6] == "2.50"  # idle p50 less the app's own x-total-time: outside the app
    assert rows["ray-2"][7:9] == ["13.00", "1.30"]  # CPU per request, and its ratio to plain serve


def test_a_sessions_cpu_time_counts_its_processes():
    import os

    assert session_cpu_s(os.getsid(0)) > 0  # this test process's session
