"""The middleware in Ray's proxy: Ray's own errors in Slipstream's JSON; a dead replica's request sent again."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest

from slipstream.ray_serve.proxy import SlipstreamProxy, middlewares

REPLICA = (b"x-slipstream-replica", b"r1")


class Downstream:
    """Ray's proxy as the middleware sees it: each call answers with the next outcome."""

    def __init__(self, *outcomes: str) -> None:
        self.outcomes = list(outcomes)
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        outcome = self.outcomes.pop(0)
        if outcome == "dies":  # the replica died: Ray's proxy returns without a response
            return
        if outcome == "ok":
            headers, status, payload = [REPLICA, (b"content-type", b"application/json")], 200, b'{"result":[1.0]}'
        elif outcome == "replica-429":
            headers = [REPLICA, (b"retry-after", b"3"), (b"content-type", b"application/json")]
            status, payload = 429, b'{"error":"the queue is full","error_type":"overloaded"}'
        else:  # Ray's own: "ray-429", "ray-503", ...
            status = int(outcome.split("-")[1])
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")]
            payload = b"Request dropped due to backpressure"
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def call(app, body: bytes = b'{"text": "hi"}', chunk: int | None = None) -> list[dict]:
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    incoming = [
        {"type": "http.request", "body": part, "more_body": i < len(chunks) - 1} for i, part in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # the client waits for its answer
        raise AssertionError

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/classify", "headers": []}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent


def status_headers_body(sent: list[dict]) -> tuple[int, dict[bytes, bytes], bytes]:
    start, *bodies = sent
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in bodies)


def test_a_replicas_answers_pass_through_untouched():
    for outcome in ("ok", "replica-429"):
        downstream = Downstream(outcome)
        status, headers, body = status_headers_body(call(SlipstreamProxy(downstream)))
        assert headers[b"x-slipstream-replica"] == b"r1"
        assert (status, body) == ((200, b'{"result":[1.0]}') if outcome == "ok" else (429, body))
        assert len(downstream.bodies) == 1


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(429, "overloaded"), (503, "unavailable"), (404, "not_found"), (408, "request_timeout"), (500, "internal")],
)
def test_rays_own_errors_get_the_json_error_body_with_their_status_and_retry_after(status, error_type):
    code, headers, body = status_headers_body(call(SlipstreamProxy(Downstream(f"ray-{status}"))))
    assert code == status
    assert json.loads(body) == {"error": "Request dropped due to backpressure", "error_type": error_type}
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert headers[b"retry-after"] == b"1"


def test_a_request_whose_replica_died_is_sent_again_with_the_same_body():
    downstream = Downstream("dies", "ok")
    status, headers, _ = status_headers_body(call(SlipstreamProxy(downstream, retries=1), chunk=4))
    assert status == 200 and headers[b"x-slipstream-replica"] == b"r1"
    assert downstream.bodies == [b'{"text": "hi"}'] * 2


def test_when_no_retry_is_left_the_client_gets_a_503_with_retry_after():
    downstream = Downstream("dies", "dies")
    status, headers, body = status_headers_body(call(SlipstreamProxy(downstream, retries=1)))
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert json.loads(body)["error_type"] == "unavailable"
    assert len(downstream.bodies) == 2
    status, _, _ = status_headers_body(call(SlipstreamProxy(Downstream("dies"), retries=0)))
    assert status == 503


def test_a_body_too_large_to_keep_is_streamed_through_and_never_sent_twice():
    body = b"x" * 100
    downstream = Downstream("dies", "ok")
    status, _, _ = status_headers_body(call(SlipstreamProxy(downstream, retries=3, max_body_bytes=10), body, chunk=7))
    assert status == 503
    assert downstream.bodies == [body]


def test_websockets_and_lifespan_pass_through():
    seen = []

    async def downstream(scope, receive, send) -> None:
        seen.append(scope["type"])

    async def never(*_: object) -> Any:
        raise AssertionError

    async def go() -> None:
        proxy = SlipstreamProxy(downstream)
        await proxy({"type": "lifespan"}, never, never)
        await proxy({"type": "websocket"}, never, never)

    asyncio.run(go())
    assert seen == ["lifespan", "websocket"]


def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closed():
    downstream = Downstream("ok")
    incoming = [{"type": "http.request", "body": b'{"text": "a trick', "more_body": True}]
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # the rest of the body never comes
        raise AssertionError

    async def send(message) -> None:
        sent.append(message)

    proxy = SlipstreamProxy(downstream, body_timeout_s=0.05)
    scope = {"type": "http", "method": "POST", "path": "/classify", "headers": []}
    asyncio.run(asyncio.wait_for(proxy(scope, receive, send), 10))
    status, headers, body = status_headers_body(sent)
    assert status == 408 and headers[b"connection"] == b"close"
    assert json.loads(body) == {
        "error": "the request's body did not arrive within 0.05 s of its headers",
        "error_type": "request_timeout",  # as `slipstream serve`'s edge says it
    }
    assert downstream.bodies == []  # nothing of it reached a replica


def test_the_body_deadline_leaves_a_body_that_arrives_alone():
    downstream = Downstream("ok")
    status, _, _ = status_headers_body(call(SlipstreamProxy(downstream, body_timeout_s=5), chunk=3))
    assert status == 200 and downstream.bodies == [b'{"text": "hi"}']


def test_the_proxy_callback_reads_its_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("SLIPSTREAM_PROXY_RETRIES", "3")
    monkeypatch.setenv("SLIPSTREAM_MAX_BODY_BYTES", "1234")
    monkeypatch.setenv("SLIPSTREAM_HTTP__BODY_TIMEOUT_S", "7.5")
    (middleware,) = middlewares()
    assert cast(object, middleware.cls) is SlipstreamProxy
    assert middleware.kwargs == {"retries": 3, "max_body_bytes": 1234, "body_timeout_s": 7.5}
