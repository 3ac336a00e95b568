"""What Ray Serve's proxy costs: `slipstream serve` against `slipstream ray` with 1 and 2 replicas.

    python -m benchmarks.ray_proxy --artifact A [--rounds 3] [--concurrency 16] [--duration-s 15]

The same artifact, settings and requests (the suite's single-text workload) through
three servers, started one after the other and in rounds (serve, ray x1, ray x2, then
again), so that a noisy machine shifts all three alike; the medians over rounds are
reported. Per server: a closed-loop point (C clients, each sending its next request
when the last returns: throughput and p50) and an idle point (one median-length text
at a time: the latency the extra hop adds). On one machine a second replica adds no
CPU, so this measures the proxy and the routing, not scaling out.

Writes JSON (every round) and a Markdown table to --output (default: stdout only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from benchmarks import environment
from benchmarks.loadgen import LoadPlan, Point, PointResult
from benchmarks.servers import free_port, running_server
from benchmarks.suite import LoadClient, _info, _only, request_set
from benchmarks.workloads import SingleTextSpec, single_texts, token_lengths
from slipstream.manifest import load_manifest

CONFIGS = ("serve", "ray-1", "ray-2")


def session_cpu_s(session: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a session: a server and, for
    `slipstream ray`, the Ray it started (proxy, replicas, controller, raylet, GCS, agents)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # fields after the name: state, ppid, pgrp, session, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


class Measurement(msgspec.Struct, frozen=True, kw_only=True):
    config: str
    round: int
    closed: PointResult
    idle: PointResult
    # CPU the server's processes used per successful request during the closed-loop point, in ms:
    # what each request costs, whatever share of a busy machine the server got.
    cpu_ms_per_request: float
    start_s: float  # from launch until every replica runs
    info: dict[str, object]  # GET /info: device, variant, engine options (the same in every configuration?)


def command(config: str, artifact: Path, port: int) -> list[str]:
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if config == "serve":
        return [sys.executable, "-m", "slipstream.cli", "serve", str(artifact), *common]
    replicas = config.split("-")[1]
    return [sys.executable, "-m", "slipstream.cli", "ray", str(artifact), *common, "--replicas", replicas,
            "--replica-cpus", str(1 / int(replicas)), "--ray-object-store-bytes", str(100 * 2**20)]  # fmt: skip


def measure(
    config: str, round_: int, artifact: Path, plan: LoadPlan, points: tuple[Point, Point], work: Path
) -> Measurement:
    port = free_port()
    started = time.monotonic()
    log = work / f"{config}-{round_}.log"
    with running_server(command(config, artifact, port), port, log, ready_timeout_s=600) as process:
        # `slipstream ray` says so once every replica runs (the first one answers /ready before).
        while config != "serve" and "serving on http://" not in log.read_text(errors="replace"):
            time.sleep(0.2)
        start_s = time.monotonic() - started
        info = _info(port) or {}
        client = LoadClient(msgspec.structs.replace(plan, port=port), work)
        try:
            cpu_before = session_cpu_s(process.pid)
            closed = client.run(points[0])
            cpu_s = session_cpu_s(process.pid) - cpu_before
            idle = client.run(points[1])
        finally:
            client.close()
    # The closed-loop point also ran its warm-up: count its requests too (same rate).
    requests = closed.achieved_rps * (points[0].warmup_s + points[0].duration_s)
    return Measurement(
        config=config,
        round=round_,
        closed=closed,
        idle=idle,
        cpu_ms_per_request=cpu_s * 1000 / max(requests, 1),
        start_s=start_s,
        info=info,
    )


def outside_app_ms(idle: PointResult) -> float:
    """Idle latency spent outside the app, in ms: the client's p50 less the p50 of the app's own
    `x-total-time`. For `slipstream serve`, uvicorn and the network; through Ray, also its proxy and the hop."""
    inside = statistics.median(float(value) for value in idle.captured) if idle.captured else 0.0
    return (idle.latency.p50_s or 0) * 1000 - inside


_VALUES: dict[str, Callable[[Measurement], float]] = {
    "rps": lambda m: m.closed.achieved_rps,
    "p50": lambda m: (m.closed.latency.p50_s or 0) * 1000,
    "p99": lambda m: (m.closed.latency.p99_s or 0) * 1000,
    "idle": lambda m: (m.idle.latency.p50_s or 0) * 1000,
    "cpu": lambda m: m.cpu_ms_per_request,
    "outside": lambda m: outside_app_ms(m.idle),
    "errors": lambda m: m.closed.n_errors + m.closed.n_rejected + m.closed.n_timeouts,
}


def table(measurements: list[Measurement]) -> str:
    def median(config: str, value: str) -> float:
        return statistics.median(_VALUES[value](m) for m in measurements if m.config == config)

    base_rps, base_cpu = median("serve", "rps"), median("serve", "cpu")
    rows = [
        "| server | throughput (req/s) | vs serve | p50 (ms) | p99 (ms) | idle p50 (ms) | outside the app, idle (ms) "
        "| CPU per request (ms) | vs serve | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config in CONFIGS:
        rps, idle, outside = median(config, "rps"), median(config, "idle"), median(config, "outside")
        rows.append(
            f"| {config} | {rps:.1f} | {rps / base_rps:.2f} | {median(config, 'p50'):.1f} | "
            f"{median(config, 'p99'):.1f} | {idle:.2f} | {outside:.2f} | {median(config, 'cpu'):.2f} | "
            f"{median(config, 'cpu') / base_cpu:.2f} | {median(config, 'errors'):.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--idle-requests", type=int, default=200)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    manifest = load_manifest(args.artifact)
    workload = single_texts(SingleTextSpec())
    lengths = token_lengths(workload, args.artifact / manifest.tokenizer.file, manifest.max_sequence_length)
    requests = request_set(workload, lengths)
    median_index = int(np.argsort(lengths)[len(lengths) // 2])
    plan = LoadPlan(
        host="127.0.0.1", port=0, path="/classify", requests={"single": requests, "idle": _only(requests, median_index)}
    )
    points = (
        Point(mode="closed", concurrency=args.concurrency, duration_s=args.duration_s, warmup_s=3.0, label="closed"),
        Point(
            mode="idle",
            workload="idle",
            requests=args.idle_requests,
            warmup_s=1.0,
            label="idle",
            capture_header="x-total-time",
        ),
    )
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="ray-proxy-") as work:
        for round_ in range(args.rounds):
            for config in CONFIGS:
                result = measure(config, round_, args.artifact, plan, points, Path(work))
                print(
                    f"round {round_} {config}: {result.closed.achieved_rps:.1f} req/s, "
                    f"p50 {(result.closed.latency.p50_s or 0) * 1000:.1f} ms, "
                    f"idle p50 {(result.idle.latency.p50_s or 0) * 1000:.2f} ms, "
                    f"{result.cpu_ms_per_request:.2f} CPU ms per request",
                    file=sys.stderr,
                    flush=True,
                )
                measurements.append(result)
    env = environment.collect()
    report = table(measurements)
    header = (
        f"{env.machine.cpu}, {env.machine.logical_cpus} logical CPUs; {args.rounds} rounds, medians; "
        f"closed loop at {args.concurrency} clients for {args.duration_s:.0f} s; idle: {args.idle_requests} "
        "sequential median-length texts"
    )
    print(header + "\n\n" + report)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "ray_proxy.json").write_bytes(
            msgspec.json.encode({"environment": env, "measurements": measurements})
        )
        (args.output / "ray_proxy.md").write_text(header + "\n\n" + report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
