"""Run the app on uvicorn, with a graceful SIGTERM: stop admitting, drain, exit.

Two listeners share one process and event loop: the inference app on `port`
and the management app on `management_port` (unless that is 0). Both are
configured by `_listener_config`, so the connection guard (deadlines, the
connection cap: `slipstream.server.edge`) applies to both, its cap over both.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from litestar import Litestar

from slipstream.batching.group import EngineFactory, load_engine_for
from slipstream.server.app import create_app
from slipstream.server.config import settings_as_toml_like
from slipstream.server.edge import ConnectionGuard, connection_cap, raise_open_file_limit
from slipstream.server.management.app import create_management_app
from slipstream.server.settings import ServiceSettings
from slipstream.server.state import ServiceState

log = logging.getLogger("slipstream.server")


class GracefulServer(uvicorn.Server):
    """uvicorn, but a signal first makes the service refuse new work (503).

    uvicorn then stops listening, waits for in-flight requests (the batcher
    keeps running them) up to `timeout_graceful_shutdown`, and runs the app's
    shutdown, which drains what is left. The process exits 0. The listeners in
    `followers` (the management API) stop with it.
    """

    def __init__(self, config: uvicorn.Config, state: ServiceState, followers: list[uvicorn.Server]) -> None:
        super().__init__(config)
        self._service_state = state
        self._followers = followers

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._service_state.begin_shutdown()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
        for follower in self._followers:
            follower.handle_exit(sig, frame)


class FollowerServer(uvicorn.Server):
    """A second listener on the same loop: the leader (`GracefulServer`) takes the signals."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (`uvicorn[standard]`): a cheaper event loop."""
    if importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop

    return uvloop.new_event_loop


def connection_guard(settings: ServiceSettings, state: ServiceState) -> ConnectionGuard:
    """The limits every listener of this process shares (pass `guard.uvicorn_options()` to each)."""
    open_files = raise_open_file_limit()
    cap = connection_cap(settings.http.max_connections, open_files)
    if cap < settings.http.max_connections:
        log.warning(
            "http.max_connections %d capped at %d (open-file limit %d)", settings.http.max_connections, cap, open_files
        )
    closed = state.metrics.connections_closed
    guard = ConnectionGuard(settings.http, max_connections=cap, on_close=lambda reason: closed.labels(reason).inc())
    state.metrics.open_connections.set_function(lambda: len(guard.connections))
    return guard


def _listener_config(
    app: Litestar, settings: ServiceSettings, host: str, port: int, *, lifespan: bool, guard: ConnectionGuard
) -> uvicorn.Config:
    """One listener's uvicorn configuration: what applies to every listener is set here."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
        lifespan="on" if lifespan else "off",
        server_header=False,
        **guard.uvicorn_options(),
    )


async def _serve_together(leader: GracefulServer, followers: list[uvicorn.Server]) -> None:
    """The followers first (a port in use fails the start before the service reports ready), then
    the leader, whose lifespan starts the readers; the followers stop with it."""
    following = [asyncio.ensure_future(follower.serve()) for follower in followers]
    for follower, task in zip(followers, following, strict=True):
        while not follower.started and not task.done():
            await asyncio.sleep(0.01)
    try:
        await leader.serve()
    finally:
        for follower in followers:
            follower.should_exit = True
        await asyncio.gather(*following)


def _log_readers(state: ServiceState) -> None:
    for reader in state.readers.by_id.values():
        model = reader.model
        if model is None:
            log.info(
                "reader %s of group %s: %s, %s",
                reader.reader_id,
                reader.consumer_group,
                reader.model_name,
                reader.state,
            )
            continue
        d = model.description
        log.info(
            "group %s: %s on %s (%s), variant %s, buckets %s, max batch %d, reader_id %s",
            model.name,
            model.manifest.source.model,
            d.device,
            ",".join(d.providers),
            d.variant,
            model.edges,
            model.max_batch_size,
            model.reader_id,
        )


def serve(settings: ServiceSettings, *, engine_factory: EngineFactory = load_engine_for) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Read by the Rust tokenizer at each call; set before the first one.
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if settings.tokenizer_parallelism else "false"
    print("slipstream serve: effective configuration\n" + settings_as_toml_like(settings), file=sys.stderr, flush=True)
    app = create_app(settings, engine_factory=engine_factory)
    state: ServiceState = app.state.service
    _log_readers(state)
    guard = connection_guard(settings, state)
    followers: list[uvicorn.Server] = []
    management_port = settings.management_listen_port
    management_host = settings.management_host or settings.host
    if management_port is not None:
        management = create_management_app(state)
        followers.append(
            FollowerServer(
                _listener_config(management, settings, management_host, management_port, lifespan=False, guard=guard)
            )
        )
    leader = GracefulServer(
        _listener_config(app, settings, settings.host, settings.port, lifespan=True, guard=guard), state, followers
    )
    loop_factory = _loop_factory()
    log.info(
        "listening on http://%s:%d%s (loop %s; at most %d connections)",
        settings.host,
        settings.port,
        f", management API on http://{management_host}:{management_port}" if management_port is not None else "",
        "uvloop" if loop_factory else "asyncio",
        guard.max_connections,
    )
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_together(leader, followers))
    return 0
