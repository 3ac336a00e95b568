"""Served throughput of two source trees of Slipstream, alternated: `python -m benchmarks.ab_served`.

Whether a change slowed serving down, on a shared machine whose speed drifts
from one minute to the next: both trees serve the same artifact side by side
(`slipstream serve`, each from its own tree), and short slices of closed-loop
load go to one, then the other, in the order A B, B A, A B, ... so drift hits
both alike. Each pair of slices gives a ratio B/A; the median of those is the
answer. The load is the benchmark's single-text `/classify` workload.

Typical use, a commit against the working tree:
    git worktree add /tmp/before REV
    python -m benchmarks.ab_served --artifact A --a /tmp/before --b .
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from benchmarks.servers import running_server
from benchmarks.workloads import single_texts
from slipstream.defaults import DEFAULT_ARTIFACT_DIR


@contextlib.contextmanager
def served_from(tree: Path, artifact: Path, port: int, log: Path) -> Iterator[str]:
    """`slipstream serve` run from the source tree `tree` (PYTHONPATH), until the block ends."""
    command = [sys.executable, "-m", "slipstream.cli", "serve", str(artifact), "--port", str(port)]
    with running_server(command, port, log, ready_timeout_s=900, env={"PYTHONPATH": str(tree)}):
        yield f"http://127.0.0.1:{port}"


async def closed_loop(url: str, texts: Sequence[str], clients: int, seconds: float) -> float:
    """Requests per second that `clients` closed-loop clients get through in `seconds`."""
    answered = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one_client(first: int) -> None:
            nonlocal answered
            index = first
            while time.monotonic() < stop:
                response = await client.post("/classify", json={"text": texts[index % len(texts)]})
                response.raise_for_status()
                answered += 1
                index += clients

        started = time.monotonic()
        await asyncio.gather(*(one_client(k) for k in range(clients)))
        return answered / (time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab_served", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR)
    parser.add_argument("--a", type=Path, required=True, help="source tree A (the reference)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15, help="length of one slice of load")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--ports", type=int, nargs=2, default=[3101, 3111], metavar=("A", "B"))
    parser.add_argument("--logs", type=Path, default=Path("benchmarks/results/logs/ab_served"))
    args = parser.parse_args(argv)
    texts = single_texts().texts()
    args.logs.mkdir(parents=True, exist_ok=True)
    artifact = args.artifact.resolve()
    with (
        served_from(args.a.resolve(), artifact, args.ports[0], args.logs / "a.log") as url_a,
        served_from(args.b.resolve(), artifact, args.ports[1], args.logs / "b.log") as url_b,
    ):
        urls = {"A": url_a, "B": url_b}
        for url in urls.values():  # warm both up under load before anything counts
            asyncio.run(closed_loop(url, texts, args.clients, 5))
        ratios = []
        for pair in range(args.pairs):
            order = ["A", "B"] if pair % 2 == 0 else ["B", "A"]
            rps = {name: asyncio.run(closed_loop(urls[name], texts, args.clients, args.seconds)) for name in order}
            ratios.append(rps["B"] / rps["A"])
            print(f"pair {pair + 1}: A {rps['A']:.1f} req/s, B {rps['B']:.1f} req/s, B/A {ratios[-1]:.3f}", flush=True)
    spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
    print(f"median B/A over {args.pairs} pairs: {statistics.median(ratios):.3f} (range {spread})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
