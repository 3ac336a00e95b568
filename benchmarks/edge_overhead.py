"""What the HTTP edge costs per request, server by server: `python -m benchmarks.edge_overhead`.

The same app (the Litestar front end with the recording engine from tests/,
whose runs take no time, so what is measured is the serving path alone; or,
with `--engine real`, the artifact's model on ONNX Runtime) behind each
candidate edge, measured in rounds, the variants interleaved so machine
drift lands on all of them alike:

- `uvicorn+guard`: `slipstream serve` as shipped, uvicorn's httptools protocol
  with the connection guard (slipstream.server.edge);
- `uvicorn`: the same app on plain uvicorn + httptools (no deadlines, no cap);
- `granian`, `hypercorn`: the same app on those servers with their own read
  timeouts (measured only when installed; neither is a dependency);
- `before`: `--before REV`, the serving path of an older commit (checked out
  into a temporary git worktree), on uvicorn as it was.

`--micro` measures the same serving path without sockets, in one process: a
request's bytes fed to the HTTP protocol (uvicorn's httptools one, with or
without the guard), through the app, until its response is written, one at a
time; per request, the process's CPU time and the wall time. No client and no
kernel share the CPU, so this is the steadiest measure of what the guard and
the app add.

Per variant and round: idle latency (one client, one short /classify at a time
with a pause between, the median end-to-end), throughput at 32 clients
(closed loop, requests per second), and the server's CPU time per request in
that window (its processes' user + system time over the requests served: on
a shared machine this moves far less with the neighbours' load than the
wall-clock figures do). Prints the medians over rounds and each variant's
ratio to `uvicorn+guard`, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from benchmarks import environment
from benchmarks.http_client import Connection, loop_factory, request_head
from benchmarks.servers import free_port, running_server
from slipstream.json_files import write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXT = "The quick brown fox jumps over the lazy dog."
BODY = msgspec.json.encode({"text": TEXT})
ARTIFACT_ENV = "SLIPSTREAM_EDGE_BENCH_ARTIFACT"
ENGINE_ENV = "SLIPSTREAM_EDGE_BENCH_ENGINE"


class VariantResult(msgspec.Struct, frozen=True, kw_only=True):
    variant: str
    idle_p50_ms: list[float]
    rps_at_32: list[float]
    cpu_ms_per_request: list[float]


class EdgeReport(msgspec.Struct, frozen=True, kw_only=True):
    started_at: str
    environment: environment.Environment
    load_average: list[float]
    rounds: int
    results: list[VariantResult]
    median: dict[str, dict[str, float]]


# -- the servers (each variant runs as `python -m benchmarks.edge_overhead --serve VARIANT`) --------


def fake_app() -> Any:
    """The app with the recording engine, for the artifact in $SLIPSTREAM_EDGE_BENCH_ARTIFACT."""
    from slipstream.server.app import create_app
    from slipstream.server.config import build_settings
    from tests.batching.fakes import RecordingEngine

    settings = build_settings(artifact=os.environ[ARTIFACT_ENV], environ={})
    if os.environ.get(ENGINE_ENV) == "real":
        return create_app(settings)

    def factory(group_settings: Any, manifest: Any) -> RecordingEngine:
        return RecordingEngine([8, 16, 32, manifest.max_sequence_length], max_batch_size=32)

    return create_app(settings, engine_factory=factory)


def serve(variant: str, port: int) -> None:
    if variant == "uvicorn":
        import uvicorn

        uvicorn.run(fake_app(), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning")
    elif variant == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.http import HTTP1Settings
        from granian.log import LogLevels

        Granian(
            "benchmarks.edge_overhead:fake_app",
            factory=True,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            loop=Loops.uvloop,
            workers=1,
            http1_settings=HTTP1Settings(header_read_timeout=10_000),
            log_level=LogLevels.warning,
        ).serve()
    elif variant == "hypercorn":
        import uvloop
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.read_timeout = 10
        config.keep_alive_timeout = 5
        config.loglevel = "warning"
        uvloop.run(hypercorn_serve(fake_app(), config))
    else:
        raise SystemExit(f"unknown variant {variant!r}")


def _command(variant: str, artifact: Path, port: int, before_dir: Path | None, engine: str) -> tuple[list[str], Path]:
    """The command that serves `variant`, and the directory it runs in."""
    if variant in ("uvicorn+guard", "before"):
        directory = REPO_ROOT if variant == "uvicorn+guard" else before_dir
        assert directory is not None
        serve_module = "tests.server.fake_server" if engine == "fake" else "slipstream.cli"
        verb = [] if engine == "fake" else ["serve"]
        return [sys.executable, "-m", serve_module, *verb, str(artifact), "--port", str(port)], directory
    return [sys.executable, "-m", "benchmarks.edge_overhead", "--serve", variant, "--port", str(port)], REPO_ROOT


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of every process below it."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        process = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(process)
        times[process] = (int(fields[11]) + int(fields[12])) / ticks
    total, stack = 0.0, [pid]
    while stack:
        process = stack.pop()
        total += times.get(process, 0.0)
        stack.extend(children.get(process, []))
    return total


@contextlib.contextmanager
def _server(
    variant: str, artifact: Path, before_dir: Path | None, log_dir: Path, engine: str
) -> Iterator[tuple[int, int]]:
    port = free_port()
    command, cwd = _command(variant, artifact, port, before_dir, engine)
    env = {ARTIFACT_ENV: str(artifact), ENGINE_ENV: engine, "PYTHONPATH": str(cwd), "SLIPSTREAM_HOST": "127.0.0.1"}
    previous = Path.cwd()
    os.chdir(cwd)  # `python -m` imports from the working directory first: the variant's own code
    try:
        with running_server(command, port, log_dir / f"edge-{variant}.log", env=env) as process:
            yield port, process.pid
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _checkout(revision: str | None) -> Iterator[Path | None]:
    if revision is None:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="slipstream-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(directory), revision], cwd=REPO_ROOT, check=True)
    try:
        yield directory
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(directory)], cwd=REPO_ROOT, check=False)
        shutil.rmtree(directory, ignore_errors=True)


# -- in process, without sockets (`--micro`) ----------------------------------------------------


class _Transport(asyncio.Transport):
    """Collects what the protocol writes; `done` is set once a whole response is in."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.done = asyncio.Event()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data
        head_end = self.out.find(b"\r\n\r\n")
        if head_end < 0:
            return
        length = 0
        for line in bytes(self.out[:head_end]).split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if len(self.out) >= head_end + 4 + length:
            self.done.set()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def micro(guarded: bool, requests: int) -> tuple[float, float]:
    """CPU and wall milliseconds per request through protocol and app, one request at a time."""
    import uvicorn
    from uvicorn.lifespan.on import LifespanOn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    options: dict[str, Any] = {"http": HttpToolsProtocol}
    if guarded:
        from slipstream.server.edge import ConnectionGuard
        from slipstream.server.settings import HttpLimits

        options = ConnectionGuard(HttpLimits()).uvicorn_options()
    config = uvicorn.Config(fake_app(), lifespan="on", log_level="warning", **options)
    config.load()
    lifespan = LifespanOn(config)
    await lifespan.startup()
    state = ServerState()
    protocol = config.http_protocol_class(config=config, server_state=state, app_state=lifespan.state)  # type: ignore[call-arg]
    transport = _Transport()
    protocol.connection_made(transport)
    head = request_head("POST", "/classify", "127.0.0.1", len(BODY))

    async def one(route: bytes = head, body: bytes = BODY) -> bytes:
        transport.out.clear()
        transport.done.clear()
        protocol.data_received(route + body)
        await transport.done.wait()
        return bytes(transport.out)

    ready = request_head("GET", "/ready", "127.0.0.1", 0)
    while not (await one(ready, b"")).startswith(b"HTTP/1.1 200"):
        await asyncio.sleep(0.05)
    for _ in range(200):  # warm-up
        await one()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        await one()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    protocol.connection_lost(None)
    await lifespan.shutdown()
    return cpu * 1000 / requests, wall * 1000 / requests


def run_micro(
    variants: Sequence[str], artifact: Path, rounds: int, requests: int, before: str | None
) -> dict[str, dict[str, list[float]]]:
    found: dict[str, dict[str, list[float]]] = {v: {"cpu_ms": [], "wall_ms": []} for v in variants}
    with _checkout(before) as before_dir:
        for round_index in range(rounds):
            for variant in variants:
                cwd = before_dir if variant == "before" else REPO_ROOT
                assert cwd is not None
                mode = "guarded" if variant == "uvicorn+guard" else "plain"
                # The `before` tree has no micro mode of its own: this file runs there, on its code.
                result = subprocess.run(
                    [sys.executable, "-c", _MICRO_CHILD, mode, str(requests), __file__],
                    cwd=cwd,
                    env={**os.environ, ARTIFACT_ENV: str(artifact), "PYTHONPATH": str(cwd)},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                cpu_ms, wall_ms = (float(x) for x in result.stdout.split())
                found[variant]["cpu_ms"].append(cpu_ms)
                found[variant]["wall_ms"].append(wall_ms)
                print(f"round {round_index + 1} {variant:>14}: {cpu_ms:.4f} CPU ms, {wall_ms:.4f} ms per request")
    return found


# Runs in the variant's tree (its own slipstream and tests packages), with this file loaded by path.
_MICRO_CHILD = """
import importlib.util, sys
import uvloop
spec = importlib.util.spec_from_file_location("edge_overhead", sys.argv[3])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(*uvloop.run(module.micro(sys.argv[1] == "guarded", int(sys.argv[2]))))
"""

# -- the measurements --------------------------------------------------------------------------


async def idle_p50_ms(port: int, requests: int, pause_s: float) -> float:
    head = request_head("POST", "/classify", "127.0.0.1", len(BODY))
    connection = await Connection.open("127.0.0.1", port)
    times = []
    try:
        for index in range(requests + 20):
            started = time.perf_counter()
            response = await connection.send(head, BODY)
            if response.status != 200:
                raise RuntimeError(f"/classify answered {response.status}: {response.body[:200]!r}")
            if index >= 20:
                times.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(pause_s)
    finally:
        connection.close()
    return statistics.median(times)


async def rps(port: int, clients: int, seconds: float) -> tuple[float, int]:
    head = request_head("POST", "/classify", "127.0.0.1", len(BODY))
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        connection = await Connection.open("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                response = await connection.send(head, BODY)
                if response.status != 200:
                    raise RuntimeError(f"/classify answered {response.status}")
                done += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - started), done


def available(variant: str) -> bool:
    module = {"granian": "granian", "hypercorn": "hypercorn"}.get(variant)
    return module is None or importlib.util.find_spec(module) is not None


def measure(
    variants: Sequence[str],
    artifact: Path,
    rounds: int,
    seconds: float,
    before: str | None,
    log_dir: Path,
    engine: str = "fake",
) -> dict[str, VariantResult]:
    found: dict[str, dict[str, list[float]]] = {v: {"idle": [], "rps": [], "cpu": []} for v in variants}
    with _checkout(before) as before_dir, asyncio.Runner(loop_factory=loop_factory()) as runner:
        for round_index in range(rounds):
            for variant in variants:
                with _server(variant, artifact, before_dir, log_dir, engine) as (port, pid):
                    runner.run(rps(port, 32, 2.0))  # warm-up
                    found[variant]["idle"].append(runner.run(idle_p50_ms(port, 300, 0.005)))
                    cpu_before = cpu_seconds(pid)
                    rate, served = runner.run(rps(port, 32, seconds))
                    found[variant]["cpu"].append((cpu_seconds(pid) - cpu_before) * 1000 / served)
                    found[variant]["rps"].append(rate)
                print(
                    f"round {round_index + 1} {variant:>14}: idle p50 {found[variant]['idle'][-1]:.3f} ms, "
                    f"{rate:.0f} rps at 32 clients, {found[variant]['cpu'][-1]:.3f} CPU ms per request",
                    flush=True,
                )
    return {
        v: VariantResult(variant=v, idle_p50_ms=r["idle"], rps_at_32=r["rps"], cpu_ms_per_request=r["cpu"])
        for v, r in found.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", type=Path, help="an export artifact (only its manifest and tokenizer are used)")
    parser.add_argument("--variants", default="uvicorn+guard,uvicorn,granian,hypercorn")
    parser.add_argument("--before", default=None, help="also measure this older revision (e.g. main)")
    parser.add_argument("--engine", choices=["fake", "real"], default="fake")
    parser.add_argument("--micro", type=int, default=0, help="requests per in-process measurement (0: off)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput window per measurement")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/edge-overhead.json"))
    parser.add_argument("--log-dir", type=Path, default=Path("benchmarks/results/logs"))
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.artifact is None:
        parser.error("--artifact is required")
    variants = [v for v in args.variants.split(",") if available(v)] + (["before"] if args.before else [])
    artifact = args.artifact.resolve()
    if args.micro:
        micro_variants = [v for v in variants if v in ("uvicorn+guard", "uvicorn", "before")]
        found = run_micro(micro_variants, artifact, args.rounds, args.micro, args.before)
        write_json(args.out, found)
        print(f"\nmedians over {args.rounds} rounds:")
        for v, r in found.items():
            print(f"{v:>14}: {statistics.median(r['cpu_ms']):.4f} CPU ms, {statistics.median(r['wall_ms']):.4f} ms")
        return 0
    results = measure(variants, artifact, args.rounds, args.seconds, args.before, args.log_dir.resolve(), args.engine)
    base = results[variants[0]]
    median = {
        v: {
            "idle_p50_ms": statistics.median(r.idle_p50_ms),
            "rps_at_32": statistics.median(r.rps_at_32),
            "idle_vs_first": statistics.median(r.idle_p50_ms) / statistics.median(base.idle_p50_ms),
            "rps_vs_first": statistics.median(r.rps_at_32) / statistics.median(base.rps_at_32),
            "cpu_ms_per_request": statistics.median(r.cpu_ms_per_request),
            "cpu_vs_first": statistics.median(r.cpu_ms_per_request) / statistics.median(base.cpu_ms_per_request),
        }
        for v, r in results.items()
    }
    report = EdgeReport(
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        environment=environment.collect(),
        load_average=list(os.getloadavg()),
        rounds=args.rounds,
        results=list(results.values()),
        median=median,
    )
    write_json(args.out, msgspec.to_builtins(report))
    print(f"\nmedians over {args.rounds} rounds (ratios to {variants[0]}):")
    for v, m in median.items():
        print(
            f"{v:>14}: idle p50 {m['idle_p50_ms']:.3f} ms ({m['idle_vs_first']:.2f}x), "
            f"{m['rps_at_32']:.0f} rps at 32 ({m['rps_vs_first']:.2f}x), "
            f"{m['cpu_ms_per_request']:.3f} CPU ms per request ({m['cpu_vs_first']:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
