"""The HTTP edge: deadlines for slow clients and a cap on open connections, on every listener.

uvicorn has no deadline for a request's headers or body (its keep-alive timer
is reset by every byte), so a client that sends a header a byte at a time holds
its connection, and a file descriptor, for as long as it likes; enough of them
exhaust the process and starve every other client. `ConnectionGuard` closes
that gap inside uvicorn's own httptools protocol (no extra hop, no other
server; see docs/design-notes.md#the-http-edge):

- a request's headers must arrive within `header_timeout_s` of its first byte
  (of the connection, for its first request), its body within `body_timeout_s`
  of its headers; past either, a 408 and the connection is closed;
- idle kept-alive connections close after `keep_alive_timeout_s` (uvicorn's);
- past `max_connections` open connections, over every listener the process
  runs, a new connection gets a canned 503 and is closed before anything of it
  is parsed.

Deadlines are checked by one sweep over the open connections a few times per
deadline, so a request only stores a time stamp: no timer per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from slipstream.server.settings import HttpLimits

log = logging.getLogger("slipstream.server")

# Why a connection was closed at the edge (the label of slipstream_http_connections_closed).
HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
OVER_LIMIT = "over_limit"

# Left for the model files, sockets to clients of our own and the libraries' own files.
FD_SHARE_FOR_CONNECTIONS = 0.75


def _canned(status: str, error: str, error_type: str, extra: str = "") -> bytes:
    body = json.dumps({"error": error, "error_type": error_type}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # a sandbox may refuse; the cap follows what is in force
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def connection_cap(max_connections: int, open_file_limit: int) -> int:
    """`max_connections`, kept well below the open-file limit."""
    if open_file_limit == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, int(open_file_limit * FD_SHARE_FOR_CONNECTIONS)))


class ConnectionGuard:
    """The limits of every listener in this process, and the connections they hold."""

    def __init__(
        self,
        limits: HttpLimits,
        *,
        max_connections: int | None = None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.limits = limits
        self.max_connections = limits.max_connections if max_connections is None else max_connections
        self.on_close = on_close or (lambda reason: None)
        self.connections: set[GuardedHttpToolsProtocol] = set()
        # A deadline is noticed within a quarter of itself (and within a second).
        self.sweep_period_s = min(1.0, limits.header_timeout_s / 4, limits.body_timeout_s / 4)
        self._sweep: asyncio.TimerHandle | None = None
        self.refusal = _canned(
            "503 Service Unavailable",
            f"the server holds its most connections ({self.max_connections}); retry shortly",
            "overloaded",
            "retry-after: 1\r\n",
        )
        self.header_timeout = _canned(
            "408 Request Timeout",
            f"the request's headers did not arrive within {limits.header_timeout_s:g} s",
            "request_timeout",
        )
        self.body_timeout = _canned(
            "408 Request Timeout",
            f"the request's body did not arrive within {limits.body_timeout_s:g} s of its headers",
            "request_timeout",
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """The `uvicorn.Config` arguments that put a listener behind this guard."""
        guard = self

        class Protocol(GuardedHttpToolsProtocol):
            _guard = guard

        # No websockets: nothing here speaks them, and an upgraded connection would leave the guard's view.
        return {"http": Protocol, "ws": "none", "timeout_keep_alive": self.limits.keep_alive_timeout_s}

    def admit(self, protocol: GuardedHttpToolsProtocol) -> bool:
        if len(self.connections) >= self.max_connections:
            self.on_close(OVER_LIMIT)
            return False
        self.connections.add(protocol)
        if self._sweep is None:
            self._sweep = protocol.loop.call_later(self.sweep_period_s, self._sweep_once, protocol.loop)
        return True

    def _sweep_once(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for protocol in [p for p in self.connections if p.deadline is not None and p.deadline <= now]:
            protocol.expire()
        self._sweep = loop.call_later(self.sweep_period_s, self._sweep_once, loop) if self.connections else None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the guard's limit and deadlines."""

    _guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline: float | None = None  # loop time by which the current phase must be over
        self.phase = ""  # HEADER_TIMEOUT or BODY_TIMEOUT while one runs

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self._guard.admit(self):
            self.transport = transport  # uvicorn's connection_lost closes it
            transport.write(self._guard.refusal)
            transport.close()
            return
        super().connection_made(transport)
        self._begin(HEADER_TIMEOUT, self._guard.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.connections.discard(self)
        self.deadline = None
        super().connection_lost(exc)

    def _begin(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline = self.loop.time() + seconds

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.phase != HEADER_TIMEOUT:  # a connection's first request counts from the connection
            self._begin(HEADER_TIMEOUT, self._guard.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._begin(BODY_TIMEOUT, self._guard.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.phase, self.deadline = "", None

    def expire(self) -> None:
        """The current phase ran past its deadline: answer 408 if nothing else is being written, and close."""
        reason, self.phase, self.deadline = self.phase, "", None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if reason == HEADER_TIMEOUT:
            # `cycle` is the previous request's: a 408 must not cut into its response.
            answer = cycle is None or cycle.response_complete or not cycle.response_started
        else:
            # `cycle` is this request's: an app that already answered (a 404, a 401 before the body) has said all.
            answer = cycle is None or not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # The app waiting for this body hears a disconnect, and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        if answer:
            self.transport.write(self._guard.header_timeout if reason == HEADER_TIMEOUT else self._guard.body_timeout)
        self.transport.close()
        self._guard.on_close(reason)
