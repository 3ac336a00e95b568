"""The edge holds: slow clients are cut off at their deadline, and none can starve another.

A flood of slow-drip connections (a partial request header, then a header line
now and then, never finishing) on loopback, bounded in count and time: every
dripping connection is answered 408 and closed once the header deadline has
passed, and a new client is served meanwhile and right after. Past the
connection cap, a connection is refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from pathlib import Path

import httpx
import pytest

from slipstream.server.edge import connection_cap, raise_open_file_limit
from tests.server.conftest import ServerProcess, fake_server_command, free_port, run_server

pytestmark = pytest.mark.timeout(180)

HEADER_TIMEOUT_S = 3.0  # short, so the test is quick; the default is 10 s
DRIPPING = 2000
DRIP_EVERY_S = 0.5
# The sweep notices a passed deadline within a quarter of it.
NOTICED_WITHIN_S = HEADER_TIMEOUT_S / 4


def raise_own_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if min(soft, hard) < needed and hard < needed:
        pytest.fail(f"the test needs {needed} open files; the hard limit here is {hard}")


BODY_TIMEOUT_S = 2.0


def start_edge_server(artifact: Path, log_path: Path, max_connections: int):
    port = free_port()
    command = fake_server_command(
        artifact,
        port,
        "--service",
        f"http.header_timeout_s={HEADER_TIMEOUT_S}",
        "--service",
        f"http.body_timeout_s={BODY_TIMEOUT_S}",
        "--service",
        f"http.max_connections={max_connections}",
    )
    return run_server(command, port, log_path)


@pytest.fixture(scope="module")
def edge_server(fake_classifier_artifact: Path, tmp_path_factory: pytest.TempPathFactory):
    with start_edge_server(fake_classifier_artifact, tmp_path_factory.mktemp("edge") / "edge.log", 4096) as server:
        yield server


@pytest.fixture
def capped_server(fake_classifier_artifact: Path, tmp_path: Path):
    with start_edge_server(fake_classifier_artifact, tmp_path / "capped.log", CAP) as server:
        yield server


class Drip:
    """One slow client: a request line and headers, a byte-sized piece at a time, never the blank line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connected_at: float) -> None:
        self.reader, self.writer = reader, writer
        self.connected_at = connected_at
        self.answer = b""
        self.closed_by_server_at: float | None = None

    async def run(self, until: float) -> None:
        try:
            self.writer.write(b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            while time.monotonic() < until:
                try:
                    data = await asyncio.wait_for(self.reader.read(4096), DRIP_EVERY_S)
                except TimeoutError:
                    self.writer.write(b"X-Drip: 1\r\n")
                    continue
                if not data:  # the server closed it
                    self.closed_by_server_at = time.monotonic()
                    return
                self.answer += data
        except (ConnectionError, OSError):
            self.closed_by_server_at = time.monotonic()
        finally:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


async def open_drip(port: int) -> Drip:
    # Stamped before connecting: the server's deadline cannot start earlier, while this client's
    # loop, busy opening the flood, may resume here well after the server accepted.
    connecting_at = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Drip(reader, writer, connecting_at)


async def open_drips(port: int, count: int, at_once: int = 100) -> list[Drip]:
    drips: list[Drip] = []
    while len(drips) < count:
        drips += await asyncio.gather(*(open_drip(port) for _ in range(min(at_once, count - len(drips)))))
    return drips


async def served_in(url: str) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{url}/classify", json={"text": "still served"})
    assert response.status_code == 200, response.text
    return time.monotonic() - started


async def flood(server: ServerProcess, count: int) -> tuple[list[Drip], float]:
    drips = await open_drips(server.port, count)
    # Each drip gives up by itself well after its deadline: the flood is bounded in time.
    stop = time.monotonic() + HEADER_TIMEOUT_S + 8
    tasks = [asyncio.ensure_future(drip.run(stop)) for drip in drips]
    await served_in(server.url)  # during the flood: served, not starved
    last_deadline = max(drip.connected_at for drip in drips) + HEADER_TIMEOUT_S + NOTICED_WITHIN_S
    await asyncio.sleep(max(0.0, last_deadline - time.monotonic()))
    after = await served_in(server.url)
    await asyncio.gather(*tasks)
    return drips, after


def test_a_slow_header_flood_is_cut_off_at_the_deadline_and_starves_no_one(edge_server):
    raise_own_open_file_limit(DRIPPING + 256)
    drips, after = asyncio.run(flood(edge_server, DRIPPING))
    assert after < 1.0, f"after the header deadline a new client waited {after:.2f} s"
    left_open = [drip for drip in drips if drip.closed_by_server_at is None]
    assert not left_open, f"{len(left_open)} dripping connections were left open"
    held = [drip.closed_by_server_at - drip.connected_at for drip in drips]  # type: ignore[operator]
    # Closed once its deadline had passed, not before, and soon after.
    assert min(held) >= HEADER_TIMEOUT_S * 0.95, min(held)
    assert max(held) < HEADER_TIMEOUT_S + NOTICED_WITHIN_S + 2, max(held)
    answered = [drip for drip in drips if drip.answer]
    assert answered and all(drip.answer.startswith(b"HTTP/1.1 408 ") for drip in answered)
    assert edge_server.metric("slipstream_http_connections_closed_total", reason="header_timeout") >= len(answered)
    assert edge_server.metric("slipstream_http_open_connections") <= 2


CAP = 200


def test_past_the_connection_cap_a_connection_is_refused_at_once(capped_server):
    edge_server = capped_server
    raise_own_open_file_limit(600)

    async def scenario() -> tuple[list[Drip], list[bytes], float]:
        held = await open_drips(edge_server.port, CAP)
        refused = []
        started = time.monotonic()
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", edge_server.port)
            try:
                refused.append(await asyncio.wait_for(reader.read(4096), 5))
            except ConnectionError:
                refused.append(b"")
            writer.close()
        refusing = time.monotonic() - started
        stop = time.monotonic() + HEADER_TIMEOUT_S + 8
        await asyncio.gather(*(drip.run(stop) for drip in held))
        return held, refused, refusing

    held, refused, refusing = asyncio.run(scenario())
    # Refused before the held ones' deadline: the cap answers at once, it does not queue.
    assert refusing < HEADER_TIMEOUT_S
    assert all(answer == b"" or answer.startswith(b"HTTP/1.1 503 ") for answer in refused)
    assert any(answer.startswith(b"HTTP/1.1 503 ") for answer in refused)
    assert all(drip.closed_by_server_at is not None for drip in held)
    assert httpx.post(f"{edge_server.url}/classify", json={"text": "a"}, timeout=10).status_code == 200
    assert edge_server.metric("slipstream_http_connections_closed_total", reason="over_limit") >= 50


def test_a_body_that_stops_arriving_is_cut_off(edge_server):
    async def scenario() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge_server.port)
        writer.write(
            b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"text": '
        )
        try:
            return await asyncio.wait_for(reader.read(4096), 60)
        finally:
            writer.close()

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body" in answer


def test_a_request_answered_before_its_body_arrived_gets_that_answer_alone(edge_server):
    async def scenario() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge_server.port)
        writer.write(
            b"POST /no-such-route HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"text": '
        )
        received = b""
        try:
            # Everything the server writes until it closes the connection at the body deadline.
            while chunk := await asyncio.wait_for(reader.read(4096), 60):
                received += chunk
        finally:
            writer.close()
        return received

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 404 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, answer


def test_the_connection_cap_stays_well_below_the_open_file_limit():
    assert connection_cap(4096, 1024) == 768  # a quarter of the descriptors stays for everything else
    assert connection_cap(100, 1024) == 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = raise_open_file_limit()
    assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert raised == (hard if hard != resource.RLIM_INFINITY else soft)
