"""Where one request's time goes at idle: `python -m benchmarks.latency_breakdown`.

Starts `slipstream serve` on an artifact, sends one short text at a time, and
splits each request's end-to-end time (measured by this client) with the
server's timing headers:

- inference: `x-inference-time`, the engine run (padding included);
- queue: `x-queue-time`, from queueing to an engine worker starting the batch;
- tokenization: `x-tokenization-time`;
- handler rest: `x-total-time` minus those three (routing, body decoding,
  hand-back of the result to the event loop, scores, response building);
- outside the handler: end-to-end minus `x-total-time` (HTTP parsing before
  the app, sending the response, the client's own read);
- added: end-to-end minus inference, the service issue's "added latency".

Each is a median over the requests. Two pacings: with a pause between
requests (the benchmark suite's idle point; caches and idle cores go cold)
and back to back (one client, no pause). The `/health` route, which does no
work, is measured the same way as the HTTP stack's own floor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from benchmarks.http_client import Connection, loop_factory, request_head
from benchmarks.servers import free_port, running_server
from slipstream.defaults import DEFAULT_ARTIFACT_DIR

TEXT = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill."
STAGES = ("end_to_end", "inference", "queue", "tokenization", "handler_rest", "outside_handler", "added")


class Breakdown(msgspec.Struct, frozen=True, kw_only=True):
    route: str
    pause_ms: float
    requests: int
    median_ms: dict[str, float]


async def _measure(port: int, route: str, body: bytes, requests: int, pause_s: float, warmup: int) -> Breakdown:
    method = "POST" if body else "GET"
    head = request_head(method, route, "127.0.0.1", len(body))
    connection = await Connection.open("127.0.0.1", port)
    rows: dict[str, list[float]] = {stage: [] for stage in STAGES}
    try:
        for index in range(warmup + requests):
            started = time.perf_counter()
            response = await connection.send(head, body)
            end_to_end = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"{route} answered {response.status}: {response.body[:200]!r}")
            if index >= warmup:
                header = {
                    name: float(response.header(f"x-{name}-time") or 0.0)
                    for name in ("total", "tokenization", "queue", "inference")
                }
                rows["end_to_end"].append(end_to_end)
                rows["inference"].append(header["inference"])
                rows["queue"].append(header["queue"])
                rows["tokenization"].append(header["tokenization"])
                rows["handler_rest"].append(
                    header["total"] - header["tokenization"] - header["queue"] - header["inference"]
                )
                rows["outside_handler"].append(end_to_end - header["total"])
                rows["added"].append(end_to_end - header["inference"])
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        connection.close()
    medians = {stage: statistics.median(values) for stage, values in rows.items()}
    return Breakdown(route=route, pause_ms=pause_s * 1000, requests=requests, median_ms=medians)


def run(artifact: Path, requests: int, pause_ms: float, log_dir: Path) -> list[Breakdown]:
    port = free_port()
    command = [sys.executable, "-m", "slipstream.cli", "serve", str(artifact)]
    env = {"SLIPSTREAM_HOST": "127.0.0.1", "SLIPSTREAM_PORT": str(port), "SLIPSTREAM_LOG_LEVEL": "warning"}
    classify = msgspec.json.encode({"text": TEXT})
    results = []
    with (
        running_server(command, port, log_dir / "latency-breakdown-server.log", env=env),
        asyncio.Runner(loop_factory=loop_factory()) as runner,
    ):
        for pause_s in (pause_ms / 1000, 0.0):
            for route, body in (("/classify", classify), ("/health", b"")):
                results.append(runner.run(_measure(port, route, body, requests, pause_s, warmup=20)))
    return results


def render(results: Sequence[Breakdown]) -> str:
    lines = [
        "| route | pause between requests | " + " | ".join(s.replace("_", " ") for s in STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    for result in results:
        values = " | ".join(f"{result.median_ms[stage]:.2f}" for stage in STAGES)
        lines.append(f"| `{result.route}` | {result.pause_ms:.0f} ms | {values} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency_breakdown", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per row (after 20 warm-up ones)")
    parser.add_argument(
        "--pause-ms", type=float, default=20.0, help="pause of the paced rows (the suite's idle point uses 20)"
    )
    parser.add_argument("--log-dir", type=Path, default=Path("benchmarks/results/logs"))
    args = parser.parse_args(argv)
    results = run(args.artifact, args.requests, args.pause_ms, args.log_dir)
    print("median milliseconds per request, one client:\n")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
