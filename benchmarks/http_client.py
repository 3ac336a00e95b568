"""A lean HTTP/1.1 keep-alive client on raw asyncio streams, for load generation.

The load generator shares this machine's two cores with the server under test,
so every microsecond it spends is taken from the server. A general client
(httpx) costs several times more CPU per request than writing a prepared
request head and reading one response; `benchmarks/README.md` has the measured
numbers (`python -m benchmarks.client_cost`). It handles what the servers under
test send: `Content-Length` or chunked bodies, keep-alive, `Connection: close`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (less CPU per request), else asyncio's default."""
    try:
        import uvloop
    except ModuleNotFoundError:
        return None
    return uvloop.new_event_loop


class HttpError(RuntimeError):
    """The connection broke or the response was not HTTP/1.1 as expected."""


class StaleConnection(HttpError):
    """The server had closed this keep-alive connection (idle timeout) before the request: safe to resend."""


class Response:
    __slots__ = ("body", "head", "status")

    def __init__(self, status: int, head: bytes, body: bytes) -> None:
        self.status = status
        self.head = head  # status line and headers, raw
        self.body = body

    def header(self, name: str) -> str | None:
        """One header's value (case-insensitive), parsed only when asked for."""
        wanted = name.lower().encode()
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == wanted:
                return value.strip().decode("latin-1")
        return None


def request_head(
    method: str, path: str, host: str, body_length: int, extra_headers: dict[str, str] | None = None
) -> bytes:
    """The bytes before a body; built once per distinct request, not per send."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if method != "GET":
        lines += ["Content-Type: application/json", f"Content-Length: {body_length}"]
    lines += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _content_length(head: bytes) -> int | None:
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        return None
    end = lowered.find(b"\r\n", at + 2)
    return int(lowered[at + 17 : end if end >= 0 else None])


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False
        self.used = False
        self.counted = True  # still counted as open by the pool that made it

    @property
    def stale(self) -> bool:
        """The server closed it while it sat idle (uvicorn closes idle keep-alive after 5 s)."""
        return self.closed or self._reader.at_eof()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        return cls(reader, writer)

    async def send(self, head: bytes, body: bytes = b"") -> Response:
        reused, self.used = self.used, True
        try:
            self._writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                self._writer.write(body)
            try:
                raw_head = await self._reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                # Closed before a byte of the answer on a reused connection: the server
                # closed it as idle while the request was on its way; it never saw it.
                partial = getattr(exc, "partial", b"")
                if reused and not partial:
                    self.close()
                    raise StaleConnection(f"{type(exc).__name__}: {exc}") from None
                raise
            status = int(raw_head[9:12])
            length = _content_length(raw_head)
            if length is not None:
                payload = await self._reader.readexactly(length)
            elif b"chunked" in raw_head.lower():
                payload = await self._read_chunked()
            else:
                raise HttpError("response has neither Content-Length nor chunked encoding")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None
        if b"\r\nconnection: close" in raw_head.lower():
            self.close()
        return Response(status, raw_head, payload)

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size + 2))
            parts[-1] = parts[-1][:-2]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()


async def fetch(host: str, port: int, method: str, path: str, body: bytes = b"", timeout_s: float = 30.0) -> Response:
    """One request on a fresh connection (for /metrics, /info and readiness polls)."""
    connection = await asyncio.wait_for(Connection.open(host, port), timeout_s)
    try:
        return await asyncio.wait_for(connection.send(request_head(method, path, host, len(body)), body), timeout_s)
    finally:
        connection.close()
