"""Run the app on uvicorn, with a graceful SIGTERM: stop admitting, drain, exit."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
from types import FrameType

import uvicorn
from uvicorn.config import HTTPProtocolType, LoopFactoryType

from slipstream.batching.group import EngineFactory, load_engine_for
from slipstream.server.app import create_app
from slipstream.server.config import settings_as_toml_like
from slipstream.server.settings import ServiceSettings
from slipstream.server.state import ServiceState

log = logging.getLogger("slipstream.server")


class GracefulServer(uvicorn.Server):
    """uvicorn, but a signal first makes the service refuse new work (503).

    uvicorn then stops listening, waits for in-flight requests (the batcher
    keeps running them) up to `timeout_graceful_shutdown`, and runs the app's
    shutdown, which drains what is left. The process exits 0.
    """

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self._service_state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._service_state.begin_shutdown()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def _event_loop() -> LoopFactoryType:
    """uvloop when installed (`uvicorn[standard]`): a cheaper event loop."""
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def _http_parser() -> HTTPProtocolType:
    """httptools when installed: a cheaper HTTP parser than h11."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


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
    for group in state.groups.values():
        d = group.description
        log.info(
            "group %s: %s on %s (%s), variant %s, buckets %s, max batch %d, reader_id %s",
            group.name,
            group.manifest.source.model,
            d.device,
            ",".join(d.providers),
            d.variant,
            group.edges,
            group.max_batch_size,
            group.reader_id,
        )
    loop, http = _event_loop(), _http_parser()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
        lifespan="on",
        server_header=False,
        loop=loop,
        http=http,
    )
    log.info("listening on http://%s:%d (loop %s, http %s)", settings.host, settings.port, loop, http)
    GracefulServer(config, state).run()
    return 0
