"""Cancel a request's work when its client goes away, so its queued items are dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from litestar import Request
from litestar.types import Receive

from slipstream.batching.errors import ServiceError

T = TypeVar("T")


class ClientDisconnected(ServiceError):
    status = 499
    error_type = "client_disconnected"


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_unless_disconnected(request: Request[Any, Any, Any], work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, cancelling it (and so dropping its queued items) if the client goes away."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    disconnected = False

    def on_disconnect(done: asyncio.Future[None]) -> None:
        nonlocal disconnected
        if not done.cancelled() and done.exception() is None:
            disconnected = True
            task.cancel()

    watcher.add_done_callback(on_disconnect)
    try:
        return await work
    except asyncio.CancelledError:
        if disconnected:
            task.uncancel()
            raise ClientDisconnected("the client disconnected") from None
        raise
    finally:
        watcher.remove_done_callback(on_disconnect)
        watcher.cancel()
