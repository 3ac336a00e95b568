"""A middleware in Ray Serve's HTTP proxy: Slipstream's error contract end to end.

Every response of a Slipstream replica carries `x-slipstream-replica`; a response
without it was made by Ray itself. This middleware, which Ray runs in front of its
proxy on every node, makes those look like ours too:

- Ray's own errors (429 from its `max_queued_requests` backpressure, 503 while no
  replica is running, 404 before the application is deployed, 408) get the body
  `{"error", "error_type"}` that every Slipstream error has, their status and
  `Retry-After` unchanged.
- A request's body must arrive within `http.body_timeout_s` of its headers, as at
  `slipstream serve`'s edge: past it, a 408 and the connection is closed. (Ray's
  proxy, uvicorn, has no deadline of its own for a body: a client trickling one
  would hold its connection and a task for as long as it liked.)
- A replica that dies while it holds a request makes Ray's proxy return without an
  answer (uvicorn would send a bare 500). The request body is kept, so the request
  is sent again (`proxy_retries` times), to another replica; scoring is a pure
  function of the request, so a retry cannot change an answer. When no retry is
  left, or the body was too large to keep, the client gets a 503 with Retry-After.

Ray reads the proxy's middlewares from its environment only: its nodes set
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=slipstream.ray_serve.proxy:middlewares
(`slipstream ray` does so for the local Ray it starts; the manifests in deploy/ on
every Ray container).
This module imports no Litestar and no engine: the proxy process stays small.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
from starlette.middleware import Middleware

from slipstream.batching.errors import NotFound, QueueFull, ServiceError, Unavailable

log = logging.getLogger("slipstream.ray_serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REPLICA_HEADER = b"x-slipstream-replica"
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK_PATH = "slipstream.ray_serve.proxy:middlewares"
# The ServiceSettings default: bodies up to the replicas' own limit are kept for a retry.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

# The error type of `slipstream serve`'s own 408 (slipstream.server.edge), for a body or a request too slow.
REQUEST_TIMEOUT = "request_timeout"

_ERROR_TYPES = {
    404: NotFound.error_type,
    408: REQUEST_TIMEOUT,
    429: QueueFull.error_type,
    503: Unavailable.error_type,
}


def error_message(status: int, message: str, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    """A complete JSON error response as ASGI messages."""
    body = msgspec.json.encode({"error": message, "error_type": _ERROR_TYPES.get(status, ServiceError.error_type)})
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        },
        {"type": "http.response.body", "body": body},
    ]


class _Attempt:
    """The `send` of one try: passes a replica's response through, rewrites one of Ray's own."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self._held: Message | None = None  # Ray's own error response start, until its body is complete
        self._body: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers", ()))
            if message["status"] < 400 or any(name.lower() == REPLICA_HEADER for name, _ in headers):
                await self._send(message)
            else:
                self._held = message
            return
        if self._held is not None and message["type"] == "http.response.body":
            self._body.append(message.get("body", b""))
            if not message.get("more_body", False):
                text = b"".join(self._body).decode(errors="replace").strip() or "error in the Ray Serve proxy"
                for out in error_message(self._held["status"], text, list(self._held.get("headers", ()))):
                    await self._send(out)
            return
        await self._send(message)


class SlipstreamProxy:
    """ASGI middleware for Ray Serve's proxy (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        retries: int = 1,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout_s: float | None = None,
    ) -> None:
        self.app = app
        self.retries = retries
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, complete, gone = 0, False, False
        try:
            # Ray's proxy calls this once the headers are in: the deadline counts from them.
            async with asyncio.timeout(self.body_timeout_s):
                while not complete and size <= self.max_body_bytes:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left before it finished sending
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    complete = not message.get("more_body", False)
        except TimeoutError:
            text = f"the request's body did not arrive within {self.body_timeout_s:g} s of its headers"
            for out in error_message(408, text, [(b"connection", b"close")]):  # uvicorn then closes it
                await send(out)
            return
        body = b"".join(chunks)
        attempts = 1 + (self.retries if complete else 0)  # a body too large to keep is sent once

        for attempt in range(attempts):
            replayed = False

            async def replay() -> Message:
                nonlocal replayed, gone
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": not complete}
                message = await receive()
                gone = gone or message["type"] == "http.disconnect"
                return message

            response = _Attempt(send)
            await self.app(scope, replay, response)
            if response.started or gone:
                return
            if attempt + 1 < attempts:
                log.warning(
                    "%s %s: the replica stopped before it answered; sending it again", scope["method"], scope["path"]
                )
        for message in error_message(
            503, "the replica serving this request stopped before it answered; retry", [(b"retry-after", b"1")]
        ):
            await send(message)


def middlewares() -> list[Middleware]:
    """The proxy callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH), configured from SLIPSTREAM_* variables."""
    from slipstream.ray_serve.settings import RaySettings
    from slipstream.server.config import service_leaves
    from slipstream.server.settings import ServiceSettings
    from slipstream.settings import env_overrides, leaves

    ray = msgspec.convert(env_overrides(leaves(RaySettings), os.environ), RaySettings, strict=False)
    service = msgspec.convert(env_overrides(service_leaves(), os.environ), ServiceSettings, strict=False)
    return [
        Middleware(
            SlipstreamProxy,
            retries=ray.proxy_retries,
            max_body_bytes=service.max_body_bytes,
            body_timeout_s=service.http.body_timeout_s,
        )
    ]
