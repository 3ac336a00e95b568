"""Service test fixtures: servers as subprocesses on free ports, spoken to over real HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import pytest

from tests.batching.fake_artifact import write_fake_artifact

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A free port whose next port is free too: the inference port, and the management API's default."""
    while True:
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@dataclass
class ServerProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample's values whose labels include `labels`."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if not match:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def run_server(
    command: list[str],
    port: int,
    log_path: Path,
    *,
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
    timeout_s: float = 90,
    management: int | Literal["off", "default"] = "off",
    start_new_session: bool = False,
) -> Iterator[ServerProcess]:
    """`management`: the management API's port; "default" leaves it to the server (port + 1), "off"
    (the default here, since nobody checked that port + 1 is free) turns it off."""
    environment = {**os.environ, **(env or {})}
    if management == "default":
        environment.pop("SLIPSTREAM_MANAGEMENT_PORT", None)
    else:
        environment["SLIPSTREAM_MANAGEMENT_PORT"] = "0" if management == "off" else str(management)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=start_new_session,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", port, process, log_path)
    try:
        deadline = time.monotonic() + timeout_s
        path = "/ready" if wait_ready else "/health"
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not up after {timeout_s} s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        server.terminate()


def fake_server_command(artifact: Path | None, port: int, *extra: str) -> list[str]:
    """No artifact: the groups come from `--config FILE` in `extra`."""
    served = [] if artifact is None else [str(artifact)]
    return [sys.executable, "-m", "tests.server.fake_server", *served, "--port", str(port), *extra]


@pytest.fixture(scope="session")
def fake_classifier_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_artifact(tmp_path_factory.mktemp("fake-classifier"), labels=["neg", "neu", "pos"])


@pytest.fixture(scope="session")
def fake_reranker_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_artifact(tmp_path_factory.mktemp("fake-reranker"), labels=["relevance"])


@pytest.fixture(scope="module")
def fake_server(fake_classifier_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "fake-server.log"
    with run_server(
        fake_server_command(
            fake_classifier_artifact, port, "--set", "max_items_per_request=64", "--service", "max_body_bytes=65536"
        ),
        port,
        log_path,
    ) as server:
        yield server
