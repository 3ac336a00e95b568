"""Ray Serve fixtures: `slipstream ray` as a subprocess on a local Ray sized for CI.

The session's cluster: Ray with 2 CPUs, no dashboard and a small object store, two
replicas at half a CPU each, serving four consumer groups from one config file:

- `primary`: a tiny random BERT classifier (3 labels) on ONNX Runtime, fp32;
- `reranker`, `steady`, `slow`: `RecordingEngine` (deterministic, slowed down), the
  last with a tiny queue so that it overloads.

Each Ray gets its own temporary directory (RAY_TMPDIR) and session: when it stops,
whatever of it is left is killed by process id.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from slipstream.ray_serve.proxy import CALLBACK_ENV, CALLBACK_PATH
from tests.server.conftest import (
    ServerProcess,
    fake_classifier_artifact,
    fake_reranker_artifact,
    free_port,
    run_server,
)

# The server tests' fake artifacts (a manifest and a real tokenizer), as fixtures here too.
__all__ = ["fake_classifier_artifact", "fake_reranker_artifact"]

API_KEY = "ray-tests-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# The Ray these tests start: small, like the machine CI runs on.
SMALL_RAY = ("--ray-num-cpus", "2", "--ray-object-store-bytes", str(100 * 1024 * 1024), "--replica-cpus", "0.5")


def fake_command(mode: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.ray_serve.fake_ray", mode, *args]


def session_pids(session: int) -> list[int]:
    """Processes of a session (the Ray a `slipstream ray` started lives in its session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session:
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def replica_pids(session: int) -> list[int]:
    """The Serve replicas' processes of a session."""
    found = []
    for pid in session_pids(session):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ServeReplica"):
                found.append(pid)
        except OSError:
            continue
    return found


@dataclass
class RayServe:
    server: ServerProcess

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def session(self) -> int:
        return self.server.process.pid

    def replica_pids(self) -> list[int]:
        return replica_pids(self.session)

    def wait_for_log(self, pattern: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not re.search(pattern, self.server.log()):
            if self.server.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no {pattern!r} in the log:\n{self.server.log()}")
            time.sleep(0.2)


def signal_session(session: int, sig: int) -> None:
    for pid in session_pids(session):
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_session(session: int, grace_s: float = 0.0) -> None:
    """Stop every process of a session by its id: SIGTERM and up to `grace_s` to exit, then SIGKILL."""
    if grace_s:
        signal_session(session, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while session_pids(session) and time.monotonic() < deadline:
            time.sleep(0.2)
    signal_session(session, signal.SIGKILL)


@dataclass
class RayHead:
    """A Ray cluster started with `ray start --head`, as an operator would (here: on this machine)."""

    address: str
    env: dict[str, str]
    session: int

    def alive(self) -> bool:
        return any(
            Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"raylet")
            for pid in session_pids(self.session)
            if Path(f"/proc/{pid}/cmdline").exists()
        )


@contextmanager
def ray_head(log_path: Path) -> Iterator[RayHead]:
    """A 2-CPU head node whose proxies use Slipstream's middleware (the env var a KubeRay pod sets)."""
    ray_tmp = tempfile.mkdtemp(prefix="slipstream-ray-")
    port = free_port()
    # Token authentication, Ray's default for a new cluster: drivers that join need RAY_AUTH_MODE=token too.
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "token", CALLBACK_ENV: CALLBACK_PATH}
    ray = str(Path(sys.executable).parent / "ray")
    start = [
        ray, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
        "--object-store-memory", str(100 * 1024 * 1024), "--include-dashboard", "false", "--disable-usage-stats",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(start, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        assert process.wait(timeout=180) == 0, log_path.read_text()
    try:
        yield RayHead(f"127.0.0.1:{port}", env, process.pid)
    finally:
        kill_session(process.pid, grace_s=10)  # this cluster's processes only (`ray stop` stops every Ray here)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@contextmanager
def slipstream_ray(
    args: list[str], port: int, log_path: Path, *, engine_delay_s: float = 0.0, env: dict[str, str] | None = None
) -> Iterator[RayServe]:
    """`slipstream ray` (through tests.ray_serve.fake_ray), up and deployed; stopped with SIGTERM after.

    It starts a Ray of its own (in its session, under a temporary RAY_TMPDIR) unless `args` name an `--address`.
    """
    ray_tmp = tempfile.mkdtemp(prefix="slipstream-ray-")
    command = fake_command(
        "ray", *args, *SMALL_RAY, "--host", "127.0.0.1", "--port", str(port),
        "--engine-delay-s", str(engine_delay_s), "--engine-max-batch-size", "4",
    )  # fmt: skip
    session = None
    try:
        with run_server(
            command, port, log_path, env={"RAY_TMPDIR": ray_tmp, **(env or {})}, timeout_s=240, start_new_session=True
        ) as server:
            session = server.process.pid
            ray_serve = RayServe(server)
            ray_serve.wait_for_log(r"serving on http://")  # every replica is up, not only the first
            yield ray_serve
    finally:
        if session is not None:
            kill_session(session)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def write_config(path: Path, groups: dict[str, dict[str, object]], **service: object) -> Path:
    lines = [f"{key} = {_toml(value)}" for key, value in service.items()]
    for name, values in groups.items():
        lines.append(f"[groups.{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session")
def cluster_config(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_artifact_factory,
    fake_classifier_artifact: Path,
    fake_reranker_artifact: Path,
) -> Path:
    groups: dict[str, dict[str, object]] = {
        "primary": {"artifact": str(tiny_artifact_factory("bert", 3, ("fp32",))), "variant": "fp32"},
        "reranker": {"artifact": str(fake_reranker_artifact)},
        "steady": {"artifact": str(fake_classifier_artifact)},
        "slow": {"artifact": str(fake_classifier_artifact), "max_queue_tokens": 100},
    }
    directory = tmp_path_factory.mktemp("ray-config")
    # A shorter body deadline than the default 30 s, so that a trickled body is cut off soon (through Ray: by its
    # proxy's middleware); not too short: on a loaded machine a client flooding the cluster may send a body
    # seconds after its headers.
    service = {"api_key": API_KEY, "max_body_bytes": 65536, "http.body_timeout_s": 10}
    return write_config(directory / "slipstream.toml", groups, **service)


@pytest.fixture(scope="session")
def ray_cluster(cluster_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServe]:
    """Two replicas of every group; Ray lets each replica hold 16 requests and queues 32 more (a burst of
    simultaneous arrivals counts as queued until each is assigned)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("ray-logs") / "slipstream-ray.log"
    args = ["--config", str(cluster_config), "--replicas", "2", "--max-ongoing-requests", "16"]
    with slipstream_ray([*args, "--max-queued-requests", "32"], port, log_path, engine_delay_s=0.02) as cluster:
        yield cluster
        cluster.server.terminate()  # SIGTERM: drain, stop Serve and the Ray it started
        deadline = time.monotonic() + 30
        while session_pids(cluster.session) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = session_pids(cluster.session)
    assert cluster.server.process.returncode == 0, cluster.server.log()
    assert not left, f"processes of the Ray it started still run: {left}"


@pytest.fixture(scope="session")
def plain_server(cluster_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`slipstream serve` of the same config: what the answers through Ray must equal."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("ray-logs") / "plain-serve.log"
    command = fake_command(
        "serve", "--config", str(cluster_config), "--host", "127.0.0.1", "--port", str(port),
        "--engine-delay-s", "0.02", "--engine-max-batch-size", "4",
    )  # fmt: skip
    with run_server(command, port, log_path) as server:
        yield server


def replica_of(response: httpx.Response) -> str | None:
    return response.headers.get("x-slipstream-replica")
