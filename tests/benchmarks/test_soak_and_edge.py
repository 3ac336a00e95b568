"""The soak's report and request mix, and the edge benchmark's CPU accounting."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import msgspec

from benchmarks import environment
from benchmarks.edge_overhead import cpu_seconds
from benchmarks.soak import MIX, Requests, Sample, SoakReport, render, rss_at


def test_every_kind_of_the_mix_is_drawn_with_a_body_for_its_route():
    requests = Requests(reader_id="primary-abc")
    seen = {requests.draw(list(MIX), list(MIX.values()))[0:2] for _ in range(400)}
    assert {kind for kind, _ in seen} == set(MIX)
    assert ("tokenize", "/tokenize/primary-abc") in seen
    _, path, body = requests.draw(["deadline"], [1.0])
    assert path == "/classify" and 1 <= msgspec.json.decode(body)["timeout_ms"] <= 5


def test_the_report_gives_the_growth_over_the_second_half():
    samples = [Sample(float(t), 300.0 + min(t, 120) / 10, 5) for t in range(0, 601, 5)]
    assert rss_at(samples, 301.0) == samples[60].rss_mib
    report = SoakReport(
        started_at="t",
        environment=environment.collect(),
        artifact="a",
        server_env=[],
        capacity_rps=10.0,
        target_rps=8.0,
        minutes=10.0,
        samples=samples,
        statuses={"200": 4000, "504": 20, "disconnected": 100},
        skipped=0,
        rss_after_warmup_mib=306.0,
        rss_middle_mib=312.0,
        rss_end_mib=312.0,
        rss_max_mib=312.0,
        growth_second_half_mib=0.0,
        growth_second_half_percent=0.0,
    )
    text = render(report)
    assert "growth over the second half: +0.0 MiB (+0.00 %)" in text
    assert "4120 requests" in text


BURN = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nsys.stdin.read()"


def test_cpu_time_counts_a_process_and_its_children():
    child = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while cpu_seconds(child.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu_seconds(child.pid) >= 0.3
        assert cpu_seconds(os.getpid()) >= cpu_seconds(child.pid)
    finally:
        child.communicate(b"", timeout=30)
