"""Start and stop the servers under test as subprocesses, and scrape them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.http_client import fetch


class ServerError(RuntimeError):
    """A server under test failed to start or died."""


def die_with_parent() -> None:
    """preexec_fn: on Linux, the child gets SIGKILL when the benchmark dies, so no server outlives a killed run."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    response = asyncio.run(fetch("127.0.0.1", port, "GET", path, timeout_s=timeout_s))
    return response.status, response.body


def wait_ready(process: subprocess.Popen[bytes], port: int, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"server exited with {process.returncode} before ready; log:\n{_tail(log_path)}")
        try:
            status, _ = http_get(port, "/ready", timeout_s=2.0)
            if status == 200:
                return
        except (OSError, TimeoutError):
            pass
        time.sleep(0.25)
    raise ServerError(f"server not ready after {timeout_s:.0f} s; log:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running_server(
    command: list[str], port: int, log_path: Path, ready_timeout_s: float = 300.0, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` (which must listen on `port`) until the block ends; its output goes to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            # No management API: it would listen on port + 1, which nothing reserved for it (a race with
            # whatever else picks free ports on the machine), and benchmarks measure the inference API.
            env={**os.environ, "SLIPSTREAM_MANAGEMENT_PORT": "0", **(env or {})},
            # Its own session: a Ctrl-C in the terminal reaches the benchmark, which stops the server in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            wait_ready(process, port, ready_timeout_s, log_path)
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes], grace_s: float = 40.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pipeline_server_command(model_dir: Path | str, port: int, threads: int, max_length: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.pipeline_server",
        str(model_dir),
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--max-length",
        str(max_length),
    ]
