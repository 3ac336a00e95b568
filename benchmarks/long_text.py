"""What `long_text: "chunk"` costs: served throughput on long passages, chunked against truncated.

    python -m benchmarks.long_text [--artifact DIR] [--clients 4] [--seconds 20] [--rounds 3]

One `slipstream serve` of the artifact (defaults otherwise, the queue raised so
that chunked requests fit); a fixed set of /classify requests of pairs, each one
query against passages of docstring English well past the model's window (by default
8 passages of about 900 words, roughly 1,200 tokens each: several windows). The
same requests are sent with `long_text` "truncate" and "chunk", alternating by
phase so that noise from other work hits both alike; each phase is a closed
loop of `--clients` clients for `--seconds`. Reported per mode (median over
rounds): passages/s, engine items (windows) per second and real tokens per
second, from the server's own /metrics; and the ratio truncate / chunk next to
the windows per passage, which is the work chunking multiplies.

Prints a Markdown table and writes results.json and results.md to
benchmarks/results/long-text/<date>-<machine>/ (or --output).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import msgspec
import numpy as np

from benchmarks import environment, server_metrics, workloads
from benchmarks.http_client import Connection, fetch, loop_factory, request_head
from benchmarks.servers import free_port, running_server
from slipstream.defaults import DEFAULT_ARTIFACT_DIR
from slipstream.json_files import write_json

RESULTS_DIR = Path("benchmarks/results/long-text")
MODES = ("truncate", "chunk")


class Phase(msgspec.Struct, frozen=True, kw_only=True):
    mode: str
    round: int
    seconds: float
    requests: int
    passages: int
    errors: int
    engine_items: float  # windows run by the engine (one per passage when truncated)
    real_tokens: float
    chunk_windows: float  # windows of chunked inputs, from the server's counters

    @property
    def passages_per_s(self) -> float:
        return self.passages / self.seconds


class ModeSummary(msgspec.Struct, frozen=True, kw_only=True):
    mode: str
    passages_per_s: float  # medians over rounds
    engine_items_per_s: float
    real_tokens_per_s: float
    windows_per_passage: float


class Report(msgspec.Struct, frozen=True, kw_only=True):
    environment: environment.Environment
    started_at: str
    artifact: str
    serve_flags: list[str]
    clients: int
    seconds_per_phase: float
    requests: int
    passages_per_request: int
    passage_tokens_mean: float
    passage_tokens_median: float
    passages_over_window: float  # share of passages longer than the model's window
    max_sequence_length: int
    phases: list[Phase]
    summary: list[ModeSummary]
    truncate_over_chunk: float  # passages/s truncated / passages/s chunked


def _counter(samples: server_metrics.Samples, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


async def _scrape(port: int) -> server_metrics.Samples:
    response = await fetch("127.0.0.1", port, "GET", "/metrics")
    return server_metrics.parse(response.body.decode())


async def _warm_up(port: int, bodies: list[bytes]) -> None:
    """Each request once: the engine's arena and caches see every shape before anything is timed."""
    connection = await Connection.open("127.0.0.1", port)
    try:
        for body in bodies:
            await connection.send(request_head("POST", "/classify", "127.0.0.1", len(body)), body)
    finally:
        connection.close()


async def _phase(
    port: int, bodies: list[bytes], passages: list[int], clients: int, seconds: float
) -> tuple[float, dict[str, int], dict[str, float]]:
    heads = [request_head("POST", "/classify", "127.0.0.1", len(body)) for body in bodies]
    counts = {"requests": 0, "passages": 0, "errors": 0}
    deadline = time.perf_counter() + seconds

    async def client(first: int) -> None:
        connection = await Connection.open("127.0.0.1", port)
        index = first
        try:
            while time.perf_counter() < deadline:
                response = await connection.send(heads[index], bodies[index])
                if response.status == 200:
                    counts["requests"] += 1
                    counts["passages"] += passages[index]
                else:
                    counts["errors"] += 1
                index = (index + 1) % len(bodies)
        finally:
            connection.close()

    before = await _scrape(port)
    started = time.perf_counter()
    await asyncio.gather(*(client(i * len(bodies) // clients) for i in range(clients)))
    elapsed = time.perf_counter() - started
    after = await _scrape(port)
    deltas = {
        name: _counter(after, name) - _counter(before, name)
        for name in (
            "slipstream_items_computed_total",
            "slipstream_real_tokens_total",
            "slipstream_chunk_windows_total",
        )
    }
    return elapsed, counts, deltas


def _markdown(report: Report) -> str:
    machine = report.environment.machine
    lines = [
        "# long_text: chunk against truncate",
        "",
        f"- Machine: {machine.cpu}, {machine.logical_cpus} logical CPUs; commit {report.environment.git_commit}",
        f"- Artifact: `{report.artifact}` (max {report.max_sequence_length} tokens); "
        f"`slipstream serve` flags beyond the defaults: {' '.join(report.serve_flags) or 'none'}",
        f"- Load: {report.clients} clients, closed loop, {report.seconds_per_phase:g} s per phase, modes alternating",
        f"- Requests: {report.requests} /classify requests of {report.passages_per_request} passages; passages "
        f"{report.passage_tokens_mean:.0f} tokens on average (median {report.passage_tokens_median:.0f}), "
        f"{report.passages_over_window:.0%} longer than the window",
        "",
        "| mode | passages/s | windows per passage | engine windows/s | real tokens/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for summary in report.summary:
        lines.append(
            f"| {summary.mode} | {summary.passages_per_s:.2f} | {summary.windows_per_passage:.2f} | "
            f"{summary.engine_items_per_s:.2f} | {summary.real_tokens_per_s:.0f} |"
        )
    lines += ["", f"truncate / chunk passages/s: **{report.truncate_over_chunk:.2f}x**", ""]
    lines += ["| round | mode | seconds | passages | passages/s | errors |", "|---|---|---:|---:|---:|---:|"]
    for phase in report.phases:
        lines.append(
            f"| {phase.round} | {phase.mode} | {phase.seconds:.1f} | {phase.passages} | "
            f"{phase.passages_per_s:.2f} | {phase.errors} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_text", description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR)
    parser.add_argument(
        "--requests",
        type=int,
        default=16,
        help="distinct requests (one query, its passages as pairs), sent round-robin",
    )
    parser.add_argument("--passages", type=int, default=8, help="passages per request")
    parser.add_argument("--passage-words", type=float, default=900.0, help="median words per passage")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=3, help="each a truncate and a chunk phase")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--serve-flag", action="append", default=[], help="extra `slipstream serve` flag(s)")
    args = parser.parse_args(argv)

    spec = workloads.RerankSpec(
        count=args.requests,
        min_passages=args.passages,
        max_passages=args.passages,
        passage_median_words=args.passage_words,
        passage_sigma=0.3,
        passage_max_words=int(args.passage_words * 3),
        min_words=3,
    )
    workload = workloads.rerank_requests(spec)
    manifest = msgspec.json.decode((args.artifact / "manifest.json").read_bytes())
    window = int(manifest["max_sequence_length"])
    lengths = workloads.token_lengths(workload, args.artifact / "tokenizer.json")
    bodies: dict[str, list[bytes]] = {
        mode: [
            msgspec.json.encode({"text": request, "long_text": mode})
            for request in workload.requests
            if not isinstance(request, str)
        ]
        for mode in MODES
    }
    passages = [args.passages] * len(bodies["chunk"])

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "slipstream.cli",
        "serve",
        str(args.artifact),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--log-level",
        "warning",
        # A chunked request is several times the tokens of a truncated one.
        "--max-queue-tokens",
        str(1 << 22),
        *args.serve_flag,
    ]
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    name = environment.collect().machine.name
    output = args.output or RESULTS_DIR / f"{dt.date.today().isoformat()}-{name}"
    phases: list[Phase] = []
    with running_server(command, port, output / "logs" / "server.log"):
        runner = asyncio.Runner(loop_factory=loop_factory())
        with runner:
            for mode in MODES:
                runner.run(_warm_up(port, bodies[mode]))
            for round_number in range(1, args.rounds + 1):
                for mode in MODES:
                    elapsed, counts, deltas = runner.run(
                        _phase(port, bodies[mode], passages, args.clients, args.seconds)
                    )
                    phases.append(
                        Phase(
                            mode=mode,
                            round=round_number,
                            seconds=elapsed,
                            requests=counts["requests"],
                            passages=counts["passages"],
                            errors=counts["errors"],
                            engine_items=deltas["slipstream_items_computed_total"],
                            real_tokens=deltas["slipstream_real_tokens_total"],
                            chunk_windows=deltas["slipstream_chunk_windows_total"],
                        )
                    )
                    print(f"round {round_number} {mode}: {phases[-1].passages_per_s:.2f} passages/s", flush=True)

    summary = []
    for mode in MODES:
        mine = [phase for phase in phases if phase.mode == mode]
        summary.append(
            ModeSummary(
                mode=mode,
                passages_per_s=statistics.median(p.passages_per_s for p in mine),
                engine_items_per_s=statistics.median(p.engine_items / p.seconds for p in mine),
                real_tokens_per_s=statistics.median(p.real_tokens / p.seconds for p in mine),
                windows_per_passage=sum(p.engine_items for p in mine) / max(1, sum(p.passages for p in mine)),
            )
        )
    report = Report(
        environment=environment.collect(),
        started_at=started_at,
        artifact=str(args.artifact),
        serve_flags=args.serve_flag,
        clients=args.clients,
        seconds_per_phase=args.seconds,
        requests=len(bodies["chunk"]),
        passages_per_request=args.passages,
        passage_tokens_mean=float(np.mean(lengths)),
        passage_tokens_median=float(np.median(lengths)),
        passages_over_window=float(np.mean(lengths > window)),
        max_sequence_length=window,
        phases=phases,
        summary=summary,
        truncate_over_chunk=summary[0].passages_per_s / summary[1].passages_per_s if summary[1].passages_per_s else 0,
    )
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "results.json", report)
    markdown = _markdown(report)
    (output / "results.md").write_text(markdown)
    print(markdown)
    return 0 if not any(phase.errors for phase in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
