"""What the load generator's HTTP client costs, per request, against a trivial server.

``python -m benchmarks.client_cost`` prints the CPU time per request of the
raw asyncio client (`benchmarks/http_client.py`) and of httpx, both sending
the same /classify body over keep-alive connections from 16 concurrent tasks
to a server (in another process) that answers at once. On a 2-core machine
shared with the server under test, this is CPU the server does not get.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

from benchmarks.http_client import Connection, loop_factory, request_head
from benchmarks.servers import free_port

BODY = b'{"text":"How do I read a file line by line in Python?"}'
RESPONSE = b'{"result":[0.125]}'


async def _trivial_server(port: int) -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(RESPONSE),
        RESPONSE,
    )

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _raw(port: int, requests: int, concurrency: int) -> None:
    head = request_head("POST", "/classify", "127.0.0.1", len(BODY))
    per_task = requests // concurrency

    async def worker() -> None:
        connection = await Connection.open("127.0.0.1", port)
        for _ in range(per_task):
            await connection.send(head, BODY)
        connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _httpx(port: int, requests: int, concurrency: int) -> None:
    import httpx

    per_task = requests // concurrency
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def worker() -> None:
            for _ in range(per_task):
                (
                    await client.post("/classify", content=BODY, headers={"content-type": "application/json"})
                ).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(client: str, port: int, requests: int, concurrency: int) -> float:
    """CPU microseconds per request in this process."""
    run = _httpx if client == "httpx" else _raw
    factory = loop_factory() if client == "raw+uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(port, concurrency * 10, concurrency))  # connections and imports out of the way
        cpu = time.process_time()
        runner.run(run(port, requests, concurrency))
        return (time.process_time() - cpu) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        asyncio.run(_trivial_server(args.serve))
        return 0
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.client_cost", "--serve", str(port)])
    try:
        time.sleep(1.0)
        clients = ["raw", "httpx"] + (["raw+uvloop"] if loop_factory() else [])
        for client in clients:
            cost = measure(client, port, args.requests, args.concurrency)
            print(
                f"{client:10s} {cost:8.1f} us CPU per request ({args.requests} requests, {args.concurrency} concurrent)"
            )
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
