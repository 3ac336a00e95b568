"""A soak: memory over a long run of mixed traffic. `python -m benchmarks.soak` (not part of CI).

Starts `slipstream serve` on an artifact, finds its capacity for the mix below
(closed loop, 32 clients), then sends the same mix open loop (Poisson
arrivals) at `--load` (0.8) of that rate for `--minutes` (10), with client
disconnects mid-request, deadlines that pass and malformed bodies sprinkled
in, and samples the server's resident memory (VmRSS) every `--sample-s`.
Memory must level off: the report gives RSS after warm-up, at the middle and
at the end, and the growth over the second half of the run.

The mix, by share of requests: one text on /classify and /predict, a small
batch on /classify, a query and 4-16 passages on /rerank, /tokenize; then a
/classify whose deadline (`timeout_ms` 1-5) may pass, a request whose client
disconnects 0-20 ms after sending it, and a body that is not valid.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from benchmarks import environment
from benchmarks.http_client import Connection, HttpError, StaleConnection, fetch, loop_factory, request_head
from benchmarks.servers import free_port, running_server
from benchmarks.workloads import RerankSpec, SingleTextSpec, rerank_requests, single_texts
from slipstream.defaults import DEFAULT_ARTIFACT_DIR
from slipstream.json_files import write_json

MIX = {
    "classify": 0.38,
    "predict": 0.15,
    "classify_batch": 0.10,
    "rerank": 0.15,
    "tokenize": 0.07,
    "deadline": 0.06,
    "disconnect": 0.05,
    "malformed": 0.04,
}
# The capacity is measured with what the server actually works on.
CAPACITY_MIX = ("classify", "predict", "classify_batch", "rerank", "tokenize")
MAX_IN_FLIGHT = 512


class Sample(msgspec.Struct, frozen=True):
    t_s: float
    rss_mib: float
    completed: int  # responses since the previous sample


class SoakReport(msgspec.Struct, frozen=True, kw_only=True):
    started_at: str
    environment: environment.Environment
    artifact: str
    server_env: list[str]
    capacity_rps: float
    target_rps: float
    minutes: float
    samples: list[Sample]
    statuses: dict[str, int]
    skipped: int
    rss_after_warmup_mib: float
    rss_middle_mib: float
    rss_end_mib: float
    rss_max_mib: float
    growth_second_half_mib: float
    growth_second_half_percent: float


class Requests:
    """Request bodies for each kind of the mix, drawn from the benchmark workloads."""

    def __init__(self, reader_id: str, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.texts = single_texts(SingleTextSpec(count=1000)).texts()
        reranks = rerank_requests(RerankSpec(count=200, min_passages=4, max_passages=16))
        self.reranks = [(r[0][0], [pair[1] for pair in r]) for r in reranks.requests if not isinstance(r, str)]
        self.reader_id = reader_id

    def draw(self, kinds: Sequence[str], weights: Sequence[float]) -> tuple[str, str, bytes]:
        kind = self.rng.choices(kinds, weights)[0]
        text = self.rng.choice(self.texts)
        if kind == "classify":
            return kind, "/classify", msgspec.json.encode({"text": text})
        if kind == "predict":
            return kind, "/predict", msgspec.json.encode({"inputs": text})
        if kind == "classify_batch":
            batch = self.rng.sample(self.texts, self.rng.randint(4, 8))
            return kind, "/classify", msgspec.json.encode({"text": batch})
        if kind == "rerank":
            query, passages = self.rng.choice(self.reranks)
            return kind, "/rerank", msgspec.json.encode({"query": query, "texts": passages})
        if kind == "tokenize":
            return kind, f"/tokenize/{self.reader_id}", msgspec.json.encode({"text": text})
        if kind == "deadline":
            return kind, "/classify", msgspec.json.encode({"text": text, "timeout_ms": self.rng.uniform(1, 5)})
        if kind == "disconnect":
            query, passages = self.rng.choice(self.reranks)
            return kind, "/rerank", msgspec.json.encode({"query": query, "texts": passages})
        return kind, "/classify", self.rng.choice([b'{"text": ', b'{"text": []}', b'{"inputs": 3}', b"\xff"])


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[Connection] = []
        self.statuses: Counter[str] = Counter()
        self.completed = 0

    async def send(self, kind: str, path: str, body: bytes) -> None:
        head = request_head("POST", path, "127.0.0.1", len(body))
        if kind == "disconnect":
            await self._disconnect(head, body)
            return
        while self.idle and self.idle[-1].stale:  # closed by the server's keep-alive timeout
            self.idle.pop().close()
        connection = self.idle.pop() if self.idle else await Connection.open("127.0.0.1", self.port)
        try:
            try:
                response = await connection.send(head, body)
            except StaleConnection:  # closed as idle while the request was on its way: resend, as clients do
                connection.close()
                connection = await Connection.open("127.0.0.1", self.port)
                response = await connection.send(head, body)
        except (HttpError, OSError):
            connection.close()
            self.statuses["connection_error"] += 1
            return
        self.statuses[str(response.status)] += 1
        self.completed += 1
        if connection.stale:
            connection.close()
        else:
            self.idle.append(connection)

    async def _disconnect(self, head: bytes, body: bytes) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(head + body)
        await asyncio.sleep(random.uniform(0, 0.02))
        writer.close()
        self.statuses["disconnected"] += 1

    def close(self) -> None:
        for connection in self.idle:
            connection.close()


async def capacity(port: int, requests: Requests, seconds: float) -> float:
    client = Client(port)
    weights = [MIX[k] for k in CAPACITY_MIX]
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < stop:
            await client.send(*requests.draw(CAPACITY_MIX, weights))

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(32)))
    elapsed = time.perf_counter() - started
    client.close()
    ok = sum(n for status, n in client.statuses.items() if status.startswith("2"))
    return ok / elapsed


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def soak(
    port: int, pid: int, requests: Requests, rate: float, seconds: float, sample_s: float
) -> tuple[list[Sample], Client, int]:
    client = Client(port)
    kinds, weights = list(MIX), list(MIX.values())
    rng = np.random.default_rng(11)
    in_flight: set[asyncio.Task[None]] = set()
    skipped = 0
    samples = [Sample(0.0, rss_mib(pid), 0)]
    started = time.perf_counter()
    next_sample = started + sample_s
    due = started
    last_completed = 0
    while (now := time.perf_counter()) < started + seconds:
        if now >= next_sample:
            samples.append(Sample(now - started, rss_mib(pid), client.completed - last_completed))
            last_completed = client.completed
            next_sample += sample_s
        if now < due:
            await asyncio.sleep(min(due - now, next_sample - now))
            continue
        due += float(rng.exponential(1.0 / rate))
        if len(in_flight) >= MAX_IN_FLIGHT:
            skipped += 1
            continue
        task = asyncio.ensure_future(client.send(*requests.draw(kinds, weights)))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    samples.append(Sample(time.perf_counter() - started, rss_mib(pid), client.completed - last_completed))
    client.close()
    return samples, client, skipped


def rss_at(samples: Sequence[Sample], t_s: float) -> float:
    return min(samples, key=lambda s: abs(s.t_s - t_s)).rss_mib


def plot(report: SoakReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.6))
    minutes = [s.t_s / 60 for s in report.samples]
    axis.plot(minutes, [s.rss_mib for s in report.samples], color="tab:blue")
    axis.set_xlabel("minutes of mixed traffic")
    axis.set_ylabel("server RSS (MiB)")
    axis.set_title(
        f"Soak: {report.target_rps:.0f} req/s (~{report.target_rps / report.capacity_rps:.0%} of capacity), "
        f"{report.environment.machine.name}"
    )
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def render(report: SoakReport) -> str:
    total = sum(report.statuses.values())
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses.items()))
    return "\n".join(
        [
            f"# Soak, {report.started_at}",
            "",
            f"- machine: {report.environment.machine.cpu}, {report.environment.machine.logical_cpus} CPUs",
            f"- artifact: `{report.artifact}`{' with ' + ', '.join(report.server_env) if report.server_env else ''}",
            f"- capacity (closed loop, 32 clients): {report.capacity_rps:.1f} req/s; "
            f"sent {report.target_rps:.1f} req/s open loop for {report.minutes:g} min ({total} requests; "
            f"{report.skipped} not sent: {MAX_IN_FLIGHT} already in flight)",
            f"- answers: {statuses}",
            f"- RSS: {report.rss_after_warmup_mib:.1f} MiB after warm-up, {report.rss_middle_mib:.1f} at the "
            f"middle, {report.rss_end_mib:.1f} at the end (max {report.rss_max_mib:.1f})",
            f"- growth over the second half: {report.growth_second_half_mib:+.1f} MiB "
            f"({report.growth_second_half_percent:+.2f} %)",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.8, help="share of the measured capacity to send")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--capacity-s", type=float, default=30.0)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/soak"))
    parser.add_argument("--name-suffix", default="", help="appended to the results directory's name")
    parser.add_argument("--log-dir", type=Path, default=Path("benchmarks/results/logs"))
    parser.add_argument(
        "--server-env", action="append", default=[], help="NAME=VALUE for the server, e.g. a setting to compare"
    )
    args = parser.parse_args(argv)
    env = environment.collect()
    port = free_port()
    command = [sys.executable, "-m", "slipstream.cli", "serve", str(args.artifact)]
    server_env = {"SLIPSTREAM_HOST": "127.0.0.1", "SLIPSTREAM_PORT": str(port), "SLIPSTREAM_LOG_LEVEL": "warning"}
    server_env.update(item.split("=", 1) for item in args.server_env)
    started_at = dt.datetime.now().strftime("%Y-%m-%dT%H:%M")
    out = args.out_dir / f"{dt.date.today().isoformat()}-{env.machine.name}{args.name_suffix}"
    with (
        running_server(command, port, args.log_dir / "soak-server.log", env=server_env) as process,
        asyncio.Runner(loop_factory=loop_factory()) as runner,
    ):
        info = msgspec.json.decode(runner.run(fetch("127.0.0.1", port, "GET", "/info")).body)
        reader_id = next(iter(info["groups"].values()))["reader_id"]
        requests = Requests(reader_id)
        rate = runner.run(capacity(port, requests, args.capacity_s))
        print(f"capacity {rate:.1f} req/s; soaking at {args.load * rate:.1f} req/s", flush=True)
        samples, client, skipped = runner.run(
            soak(port, process.pid, requests, args.load * rate, args.minutes * 60, args.sample_s)
        )
    half = args.minutes * 30
    after_warmup = rss_at(samples, min(60.0, half))
    middle, end = rss_at(samples, half), samples[-1].rss_mib
    report = SoakReport(
        started_at=started_at,
        environment=env,
        artifact=str(args.artifact),
        server_env=args.server_env,
        capacity_rps=rate,
        target_rps=args.load * rate,
        minutes=args.minutes,
        samples=samples,
        statuses=dict(client.statuses),
        skipped=skipped,
        rss_after_warmup_mib=after_warmup,
        rss_middle_mib=middle,
        rss_end_mib=end,
        rss_max_mib=max(s.rss_mib for s in samples),
        growth_second_half_mib=end - middle,
        growth_second_half_percent=100 * (end - middle) / middle,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "soak.json", msgspec.to_builtins(report))
    (out / "soak.md").write_text(render(report))
    plot(report, out / "rss.png")
    print(render(report))
    print(f"median completed per {args.sample_s:g} s: {statistics.median(s.completed for s in samples[1:]):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
