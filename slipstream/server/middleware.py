"""Per-request metrics (route, status, latency) and the start stamp behind `x-total-time`."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from slipstream.batching.group import Scored
from slipstream.server.metrics import ServiceMetrics

# Where the middleware leaves the request's arrival time in the scope's state.
_STARTED = "slipstream.started"


class RequestMetricsMiddleware(ASGIMiddleware):
    """Counts requests by route template and status, and times them."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        scope.setdefault("state", {})[_STARTED] = started
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            # The route's template (`/tokenize/{reader_id:str}`), not the path: a bounded label set.
            route = scope.get("path_template") or "other"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_latency.labels(route).observe(time.perf_counter() - started)


def timing_headers(request: Request[Any, Any, Any], scored: Scored) -> dict[str, str]:
    """Per-response timing (milliseconds), named as TEI names them."""
    started = request.scope.get("state", {}).get(_STARTED)
    total = (time.perf_counter() - started) * 1000 if started else 0.0
    return {
        "x-total-time": f"{total:.3f}",
        "x-tokenization-time": f"{scored.tokenization_s * 1000:.3f}",
        "x-queue-time": f"{scored.queue_s * 1000:.3f}",
        "x-inference-time": f"{scored.inference_s * 1000:.3f}",
    }
