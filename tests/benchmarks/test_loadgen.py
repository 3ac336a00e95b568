"""The load generator against a scripted HTTP server: counting, statuses, and no coordinated omission."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from benchmarks.http_client import Connection, request_head
from benchmarks.loadgen import LoadPlan, Point, PointResult, RequestSet, run_plan

Handler = Callable[[bytes], Awaitable[tuple[int, bytes, bool]]]  # body -> (status, payload, chunked)


async def _serve(handler: Handler) -> tuple[asyncio.Server, int]:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                status, payload, chunked = await handler(await reader.readexactly(length))
                if chunked:
                    half = len(payload) // 2
                    body = b"".join(
                        f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (payload[:half], payload[half:]) if p
                    )
                    writer.write(
                        f"HTTP/1.1 {status} X\r\ntransfer-encoding: chunked\r\nx-inference-time: 1.5\r\n\r\n".encode()
                        + body
                        + b"0\r\n\r\n"
                    )
                else:
                    writer.write(
                        (
                            f"HTTP/1.1 {status} X\r\ncontent-length: {len(payload)}\r\nx-inference-time: 1.5\r\n\r\n"
                        ).encode()
                        + payload
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _plan(port: int, points: list[Point], **kw: object) -> LoadPlan:
    bodies = [b'{"text":"a"}', b'{"text":"bb"}', b'{"text":["c","d"]}']
    requests = {"single": RequestSet(bodies=bodies, sequences=[1, 1, 2], tokens=[3, 4, 6])}
    return LoadPlan(host="127.0.0.1", port=port, path="/classify", requests=requests, points=points, seed=1, **kw)  # type: ignore[arg-type]


def _run(handler: Handler, points: list[Point], **kw: object) -> list[PointResult]:
    async def main() -> list[PointResult]:
        server, port = await _serve(handler)
        results: list[PointResult] = []
        async with server:
            await run_plan(_plan(port, points, **kw), results.append)
        return results

    return asyncio.run(main())


def delayed(seconds: float, status: int = 200, chunked: bool = False) -> Handler:
    async def handler(body: bytes) -> tuple[int, bytes, bool]:
        await asyncio.sleep(seconds)
        return status, b'{"result":[1.0]}', chunked

    return handler


def one_at_a_time(seconds: float) -> Handler:
    lock = asyncio.Lock()

    async def handler(body: bytes) -> tuple[int, bytes, bool]:
        async with lock:
            await asyncio.sleep(seconds)
        return 200, b'{"result":[1.0]}', False

    return handler


def test_closed_loop_keeps_c_requests_in_flight() -> None:
    [result] = _run(delayed(0.02), [Point(mode="closed", concurrency=4, warmup_s=0.2, duration_s=1.0)])
    assert result.n_errors == result.n_rejected == result.n_timeouts == 0
    # 4 clients, 20 ms each: at most 200 requests/s, and well above one client's 50/s.
    assert 70 < result.achieved_rps <= 205
    assert result.latency.p50_s is not None and result.latency.p50_s >= 0.02
    assert result.sequences_per_s >= result.achieved_rps  # some requests carry two sequences
    assert result.tokens_per_s > result.sequences_per_s


def test_open_loop_offers_the_poisson_rate_and_reads_chunked_responses() -> None:
    [result] = _run(delayed(0.005, chunked=True), [Point(mode="open", rate=100, warmup_s=0.2, duration_s=1.5)])
    assert result.offered_rps == pytest.approx(100, rel=0.35)
    assert result.achieved_rps == pytest.approx(result.offered_rps, rel=0.2)
    assert result.n_ok == result.n_measured and result.n_errors == 0


def test_open_loop_latency_runs_from_the_intended_send_time() -> None:
    """No coordinated omission: with one connection and a server at half the offered
    rate, requests queue in the client; their wait counts as latency."""
    [result] = _run(
        one_at_a_time(0.02), [Point(mode="open", rate=100, warmup_s=0.0, duration_s=1.0)], max_connections=1
    )
    assert result.achieved_rps == pytest.approx(50, rel=0.3)
    # A client timing from its own send would report ~20 ms for every request.
    assert result.latency.p50_s is not None and result.latency.p50_s > 0.15
    assert result.latency.p99_s is not None and result.latency.p99_s > 0.35
    assert result.send_lag_p99_s > 0.3


def test_rejections_are_counted_apart_from_successes() -> None:
    [result] = _run(delayed(0.001, status=429), [Point(mode="closed", concurrency=2, warmup_s=0.0, duration_s=0.5)])
    assert result.n_ok == 0 and result.n_rejected == result.n_measured > 0
    assert result.achieved_rps == 0 and result.latency.count == 0


def test_idle_requests_run_one_at_a_time_and_capture_a_header() -> None:
    [result] = _run(delayed(0.002), [Point(mode="idle", requests=10, pause_s=0.001, capture_header="x-inference-time")])
    assert result.n_ok == 10
    assert result.captured == ["1.5"] * 10


def test_a_keep_alive_connection_the_server_closed_is_replaced_not_counted_as_an_error() -> None:
    """uvicorn closes keep-alive connections idle for 5 s; the client must resend on a new one."""

    async def main() -> PointResult:
        async def one_request_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()  # no "Connection: close" header: the client only learns it from the socket

        server = await asyncio.start_server(one_request_per_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        results: list[PointResult] = []
        async with server:
            await run_plan(_plan(port, [Point(mode="idle", requests=20, pause_s=0.0)]), results.append)
        return results[0]

    result = asyncio.run(main())
    assert result.n_ok == 20 and result.n_errors == 0


def test_a_connection_is_reused_across_requests() -> None:
    async def main() -> list[int]:
        connections: list[int] = []

        async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()
            except asyncio.IncompleteReadError:
                writer.close()

        server = await asyncio.start_server(counting, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            connection = await Connection.open("127.0.0.1", port)
            statuses = [(await connection.send(request_head("GET", "/x", "h", 0))).status for _ in range(5)]
            connection.close()
        assert len(connections) == 1
        return statuses

    assert asyncio.run(main()) == [200] * 5
