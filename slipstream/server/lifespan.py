"""Start-up and shutdown: engine workers start with the app, warm-up runs in the background,
and shutdown drains what is queued before the process exits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar

from slipstream.server.state import ServiceState

log = logging.getLogger("slipstream.server")


async def warm_up(state: ServiceState) -> None:
    """Warm every group up in turn; /ready answers 503 until all are done (or says why one failed)."""
    for group in state.groups.values():
        try:
            started = time.perf_counter()
            await group.warmup()
            log.info(
                "group %s warmed up %d shapes in %.1f s",
                group.name,
                len(group.warmup_shapes()),
                time.perf_counter() - started,
            )
        except Exception as exc:  # stays not-ready, and says why
            state.warmup_error = f"warm-up of group {group.name!r} failed: {exc}"
            log.error(state.warmup_error)
            return
    if state.ready:
        log.info(
            "ready: %s",
            ", ".join(f"{g.name} ({g.description.device}, {g.description.variant})" for g in state.groups.values()),
        )


def service_lifespan(state: ServiceState) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        for group in state.groups.values():
            await group.start()
        state.warmup_task = asyncio.get_running_loop().create_task(warm_up(state))
        try:
            yield
        finally:
            state.begin_shutdown()
            if not state.warmup_task.done():
                state.warmup_task.cancel()
            timeout_s = state.settings.shutdown_timeout_s
            await asyncio.gather(*(g.batcher.close(timeout_s) for g in state.groups.values()))
            state.tokenizer_executor.shutdown(wait=False, cancel_futures=True)

    return lifespan
