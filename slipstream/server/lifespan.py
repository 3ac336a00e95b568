"""Start-up and shutdown: engine workers start with the app, warm-up and the readers file's readers
come up in the background, and shutdown drains what is queued before the process exits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar

from slipstream.server.state import ServiceState


def service_lifespan(state: ServiceState) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await state.readers.start()
        try:
            yield
        finally:
            state.begin_shutdown()
            await state.readers.close(state.settings.shutdown_timeout_s)
            state.tokenizer_executor.shutdown(wait=False, cancel_futures=True)

    return lifespan
