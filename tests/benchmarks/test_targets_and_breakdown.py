"""The targets report and the latency breakdown render what was measured, and say which goals are met."""

from __future__ import annotations

from benchmarks.latency_breakdown import STAGES, Breakdown
from benchmarks.latency_breakdown import render as render_breakdown
from benchmarks.targets import Round, TargetsReport, _median
from benchmarks.targets import render as render_targets


def test_the_median_of_each_target_decides_whether_it_is_met():
    rounds = [
        Round(
            offline_sequences_per_s=140.0,
            served_rps_at_32=133.0,
            pipeline_rps_at_32=27.0,
            targets={"served_vs_offline": 0.95, "served_vs_pipeline": 4.9, "idle_added_latency_p50_ms": 2.7},
        ),
        Round(
            offline_sequences_per_s=138.0,
            served_rps_at_32=110.0,
            pipeline_rps_at_32=None,
            targets={"served_vs_offline": 0.80, "served_vs_pipeline": None, "idle_added_latency_p50_ms": 0.9},
        ),
        Round(
            offline_sequences_per_s=138.0,
            served_rps_at_32=127.0,
            pipeline_rps_at_32=28.0,
            targets={"served_vs_offline": 0.92, "served_vs_pipeline": 4.5, "idle_added_latency_p50_ms": 2.8},
        ),
    ]
    median = {name: _median([r.targets[name] for r in rounds]) for name in rounds[0].targets}
    assert median == {"served_vs_offline": 0.92, "served_vs_pipeline": 4.7, "idle_added_latency_p50_ms": 2.7}
    text = render_targets(TargetsReport(started_at="t", machine="m", artifact="a", rounds=rounds, median=median))
    assert "| 2 | 138.0 | 110.0 | – | 0.80 | – | 0.90 |" in text
    assert "offline engine throughput | 0.92 | 0.9 | yes |" in text
    assert "(end-to-end minus engine time), ms | 2.70 | 1 | no |" in text


def test_the_breakdown_has_one_row_per_route_and_pacing():
    row = Breakdown(route="/classify", pause_ms=20.0, requests=10, median_ms={stage: 1.0 for stage in STAGES})
    text = render_breakdown([row])
    assert text.splitlines()[2] == "| `/classify` | 20 ms | " + " | ".join(["1.00"] * len(STAGES)) + " |"
