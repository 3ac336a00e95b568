"""Load generation: open-loop Poisson arrivals and closed-loop concurrency.

Runs in a process of its own (``python -m benchmarks.loadgen PLAN``, then one
JSON `Point` per line on stdin, one JSON `PointResult` per line back on
stdout) so that its event loop never competes with the benchmark driver's, so
its CPU time can be measured and reported (on a 2-core machine the client's
cost is part of the picture), and so the driver can scrape the server's
metrics between points while the connections stay warm.

Open loop (MLPerf's server scenario): request k is due at ``t0 + a_k`` with
exponential inter-arrival gaps, whether or not earlier requests have finished.
Its latency runs from that intended time, not from when the client got round
to sending it, so a stalled server or a late client is charged in full (no
coordinated omission). Closed loop (perf_analyzer's concurrency mode): C
clients each send their next request as soon as the last one returned.

Each point has a warm-up, then a measurement window. Throughput is the number
of successful responses completed inside the window divided by its length;
latency percentiles cover the requests due (open) or sent (closed) inside it,
including those that finish after it ends.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

from benchmarks.http_client import Connection, HttpError, StaleConnection, loop_factory, request_head
from benchmarks.stats import LatencySummary, summarize_latencies

# Status codes the client records itself: no response within the timeout, or a broken connection.
STATUS_TIMEOUT = -1
STATUS_CONNECTION_ERROR = -2


class RequestSet(msgspec.Struct, frozen=True, kw_only=True):
    """Prepared request bodies and what each carries."""

    bodies: list[bytes]
    sequences: list[int]  # sequences per request, parallel to bodies
    tokens: list[int]  # real tokens per request (all its sequences), parallel to bodies


class Point(msgspec.Struct, frozen=True, kw_only=True):
    mode: Literal["open", "closed", "idle"]
    workload: str = "single"  # which of the plan's request sets
    rate: float | None = None  # requests/s (open loop)
    concurrency: int | None = None  # clients (closed loop)
    warmup_s: float = 2.0
    duration_s: float = 10.0
    # idle: one request at a time with a pause between, `requests` of them.
    requests: int | None = None
    pause_s: float = 0.02
    label: str = ""
    # A response header to copy into the result (e.g. the server's engine time at idle).
    capture_header: str | None = None


class LoadPlan(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    path: str
    requests: dict[str, RequestSet]  # by workload name
    points: list[Point] = []  # run in order by run_plan; the command reads them from stdin instead
    seed: int = 0
    timeout_s: float = 30.0
    max_connections: int = 512
    headers: dict[str, str] = {}


class PointResult(msgspec.Struct, frozen=True, kw_only=True):
    point: Point
    offered_rps: float  # requests due (open) or sent (closed) per second in the window
    achieved_rps: float  # successful responses per second completed in the window
    sequences_per_s: float
    tokens_per_s: float
    n_measured: int
    n_ok: int
    n_rejected: int  # 429
    n_errors: int  # other statuses, broken connections
    n_timeouts: int
    latency: LatencySummary  # seconds, successful measured requests
    send_lag_p99_s: float  # how late the client sent (open loop): a client-health check
    client_cpu_s: float  # load generator process CPU seconds during the point
    wall_s: float
    captured: list[str] = []  # values of point.capture_header, one per measured request


class _Log:
    """Per-request records in preallocated arrays (no objects per request)."""

    def __init__(self, n: int) -> None:
        self.body_index = np.zeros(n, dtype=np.int64)
        self.intended = np.zeros(n)
        self.sent = np.zeros(n)
        self.done = np.full(n, np.nan)
        self.status = np.zeros(n, dtype=np.int64)
        self.captured: list[str | None] = [None] * n
        self.count = 0

    def grow(self) -> None:
        n = len(self.intended)
        for name in ("body_index", "intended", "sent", "status"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(n, dtype=getattr(self, name).dtype)]))
        self.done = np.concatenate([self.done, np.full(n, np.nan)])
        self.captured.extend([None] * n)


class _Pool:
    """Keep-alive connections, opened on demand up to a cap; waiting for one counts as latency."""

    def __init__(self, host: str, port: int, cap: int) -> None:
        self._host, self._port, self._cap = host, port, cap
        self._idle: deque[Connection] = deque()
        self._open = 0
        self._freed = asyncio.Condition()

    async def acquire(self) -> Connection:
        while True:
            while self._idle:
                connection = self._idle.pop()
                if not connection.stale:
                    return connection
                connection.close()
                self._open -= 1
            if self._open < self._cap:
                return await self.fresh()
            async with self._freed:
                await self._freed.wait()

    async def fresh(self) -> Connection:
        """A new connection, counted as open; also in place of a stale one just released (the count stays)."""
        self._open += 1
        try:
            return await Connection.open(self._host, self._port)
        except OSError:
            self._open -= 1
            raise

    async def release(self, connection: Connection) -> None:
        if connection.closed:
            if connection.counted:
                connection.counted = False
                self._open -= 1
        else:
            self._idle.append(connection)
        async with self._freed:
            self._freed.notify()

    async def prewarm(self, n: int) -> None:
        n = min(n, self._cap) - self._open
        if n > 0:
            connections = await asyncio.gather(*(Connection.open(self._host, self._port) for _ in range(n)))
            self._open += n
            self._idle.extend(connections)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _Runner:
    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.pool = _Pool(plan.host, plan.port, plan.max_connections)
        self.rng = np.random.default_rng(plan.seed)
        self._use(next(iter(plan.requests)), None)

    def _use(self, workload: str, capture_header: str | None) -> None:
        """Point the runner at one request set (heads are built once per set, not per send)."""
        requests = self.plan.requests[workload]
        self.bodies = requests.bodies
        self.heads = [
            request_head("POST", self.plan.path, self.plan.host, len(b), self.plan.headers) for b in self.bodies
        ]
        self.sequences = np.asarray(requests.sequences, dtype=np.int64)
        self.tokens = np.asarray(requests.tokens, dtype=np.int64)
        self.capture_header = capture_header
        # Each point starts at a random place in the set and walks through it in order.
        self._next_body = itertools.count(int(self.rng.integers(len(self.bodies))))

    def _body(self) -> int:
        return next(self._next_body) % len(self.bodies)

    async def _one(self, log: _Log, k: int) -> None:
        i = int(log.body_index[k])
        try:
            connection = await self.pool.acquire()
        except OSError:
            log.status[k] = STATUS_CONNECTION_ERROR
            log.done[k] = time.perf_counter()
            return
        log.sent[k] = time.perf_counter()
        try:
            try:
                response = await asyncio.wait_for(connection.send(self.heads[i], self.bodies[i]), self.plan.timeout_s)
            except StaleConnection:
                # Resend once on a new connection, as HTTP clients do; the time lost stays in the latency.
                await self.pool.release(connection)
                connection = await self.pool.fresh()
                response = await asyncio.wait_for(connection.send(self.heads[i], self.bodies[i]), self.plan.timeout_s)
            log.status[k] = response.status
            if self.capture_header:
                log.captured[k] = response.header(self.capture_header)
        except TimeoutError:
            connection.close()
            log.status[k] = STATUS_TIMEOUT
        except (HttpError, OSError):
            connection.close()
            log.status[k] = STATUS_CONNECTION_ERROR
        log.done[k] = time.perf_counter()
        await self.pool.release(connection)

    async def open_loop(self, point: Point) -> tuple[_Log, float, float]:
        assert point.rate and point.rate > 0
        total = point.warmup_s + point.duration_s
        expected = int(point.rate * total * 1.5) + 16
        gaps = self.rng.exponential(1.0 / point.rate, size=expected)
        arrivals = np.cumsum(gaps)
        arrivals = arrivals[arrivals < total]
        log = _Log(len(arrivals))
        # Enough warm connections for the expected concurrency (Little's law with a margin).
        await self.pool.prewarm(min(64, int(point.rate * 0.2) + 4))
        tasks = []
        t0 = time.perf_counter() + 0.05
        for k, due in enumerate(arrivals.tolist()):
            log.body_index[k] = self._body()
            log.intended[k] = t0 + due
            delay = log.intended[k] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(log, k)))
        log.count = len(arrivals)
        await self._drain(tasks)
        return log, t0 + point.warmup_s, t0 + total

    async def closed_loop(self, point: Point) -> tuple[_Log, float, float]:
        assert point.concurrency and point.concurrency > 0
        log = _Log(4096)
        await self.pool.prewarm(point.concurrency)
        t0 = time.perf_counter()
        end = t0 + point.warmup_s + point.duration_s

        async def client() -> None:
            while time.perf_counter() < end:
                if log.count == len(log.intended):
                    log.grow()
                k = log.count
                log.count += 1
                log.body_index[k] = self._body()
                log.intended[k] = time.perf_counter()
                await self._one(log, k)

        await asyncio.gather(*(client() for _ in range(point.concurrency)))
        return log, t0 + point.warmup_s, end

    async def idle(self, point: Point) -> tuple[_Log, float, float]:
        n = point.requests or 200
        log = _Log(n)
        await self.pool.prewarm(1)
        t0 = time.perf_counter()
        for k in range(n):
            log.body_index[k] = self._body()
            log.intended[k] = time.perf_counter()
            await self._one(log, k)
            await asyncio.sleep(point.pause_s)
        log.count = n
        return log, t0, time.perf_counter()

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=self.plan.timeout_s + 1)
        for task in tasks:
            task.cancel()

    def summarize(self, point: Point, log: _Log, start: float, end: float, cpu_s: float, wall_s: float) -> PointResult:
        n = log.count
        intended, done, status = log.intended[:n], log.done[:n], log.status[:n]
        measured = (intended >= start) & (intended < end)
        ok = status == 200
        # Timed out, or still unanswered when the drain gave up (status never set).
        unanswered = (status == STATUS_TIMEOUT) | (status == 0)
        window = end - start
        completed_in_window = ok & (done >= start) & (done < end)
        body = log.body_index[:n][completed_in_window]
        latencies = (done - intended)[measured & ok]
        lag = (log.sent[:n] - intended)[measured & (log.sent[:n] > 0)]
        captured = [c for c, m in zip(log.captured[:n], measured.tolist(), strict=True) if m and c is not None]
        return PointResult(
            point=point,
            offered_rps=float(measured.sum() / window),
            achieved_rps=float(completed_in_window.sum() / window),
            sequences_per_s=float(self.sequences[body].sum() / window),
            tokens_per_s=float(self.tokens[body].sum() / window),
            n_measured=int(measured.sum()),
            n_ok=int((measured & ok).sum()),
            n_rejected=int((measured & (status == 429)).sum()),
            n_errors=int((measured & ~ok & (status != 429) & ~unanswered).sum()),
            n_timeouts=int((measured & unanswered).sum()),
            latency=summarize_latencies(latencies),
            send_lag_p99_s=float(np.percentile(lag, 99)) if len(lag) else 0.0,
            client_cpu_s=cpu_s,
            wall_s=wall_s,
            captured=captured,
        )

    async def run_point(self, point: Point) -> PointResult:
        self._use(point.workload, point.capture_header)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if point.mode == "open":
            log, start, end = await self.open_loop(point)
        elif point.mode == "closed":
            log, start, end = await self.closed_loop(point)
        else:
            log, start, end = await self.idle(point)
        return self.summarize(point, log, start, end, time.process_time() - cpu0, time.perf_counter() - wall0)


async def run_plan(plan: LoadPlan, emit: Callable[[PointResult], None]) -> None:
    runner = _Runner(plan)
    try:
        for point in plan.points:
            emit(await runner.run_point(point))
    finally:
        runner.pool.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.loadgen PLAN.msgpack``: reads JSON points from stdin, one per line,
    and answers each with a JSON result line on stdout when it has run."""
    args = argv if argv is not None else sys.argv[1:]
    plan = msgspec.msgpack.decode(Path(args[0]).read_bytes(), type=LoadPlan)
    encoder = msgspec.json.Encoder()
    with asyncio.Runner(loop_factory=loop_factory()) as loop:
        runner = _Runner(plan)
        try:
            for line in sys.stdin.buffer:
                if line.strip():
                    result = loop.run(runner.run_point(msgspec.json.decode(line, type=Point)))
                    sys.stdout.buffer.write(encoder.encode(result) + b"\n")
                    sys.stdout.buffer.flush()
        finally:
            runner.pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
