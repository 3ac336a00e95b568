"""The Ray Serve deployment: each replica runs the whole per-machine Slipstream.

A replica builds the Litestar app of `slipstream.server.app.create_app` itself,
when Ray starts it (`serve.ingress` with a builder, so the app, its engines and
threads are never pickled): the engines, the length-bucketed batchers, every route
of every API family, errors, auth and metrics. Ray Serve only routes requests to
the replicas and scales them.

Ray's hooks, tied to the batchers and the engines:
- `check_health`: the first call (during the replica's start) waits until the
  configuration's readers have warmed up, so Ray routes nothing to a replica before
  every bucket has run once; later calls fail when one of them failed (its warm-up)
  or an engine worker thread died, or the batch watchdog has no worker left that
  is not stuck in a hung engine run, and Ray replaces the replica.
- `record_autoscaling_stats`: the tokens queued in the replica's batchers, what
  `slipstream.ray_serve.autoscaling.QueuedTokensPolicy` scales on.

The management API (its own port) is not served through Ray: the Serve config says
what every replica serves.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from ray import serve
from ray.serve import Deployment

from slipstream.batching.group import EngineFactory, load_engine_for
from slipstream.ray_serve.autoscaling import QUEUED_TOKENS
from slipstream.ray_serve.config import DEPLOYMENT_NAME, resolve_settings
from slipstream.server.app import create_app
from slipstream.server.settings import ServiceSettings
from slipstream.server.state import ServiceState

log = logging.getLogger("slipstream.ray_serve")

REPLICA_HEADER = "x-slipstream-replica"


class ReplicaHeader:
    """Adds `x-slipstream-replica: <id>` to every HTTP response of the wrapped app."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def _log_to_stderr(level: str) -> None:
    """Slipstream's log lines on the replica's stderr, which Ray keeps in its worker logs."""
    logger = logging.getLogger("slipstream")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


class UnhealthyReplica(RuntimeError):
    """What `check_health` raises: Ray restarts the replica."""


def replica_health(state: ServiceState) -> str | None:
    """Why this replica cannot serve, or None when it can (readers still warming up count as able)."""
    for reader in state.readers.by_id.values():
        if reader.origin == "config" and reader.phase == "failed":
            return f"reader {reader.reader_id} of group {reader.consumer_group!r} is {reader.state}"
        if reader.ready and reader.model is not None and not reader.model.batcher.workers_alive:
            return (
                f"the engine of reader {reader.reader_id} (group {reader.consumer_group!r}) has no working worker "
                "left (one stopped, or every one is stuck past batch_timeout_s)"
            )
    return None


def queued_tokens(state: ServiceState) -> int:
    """Tokens waiting in every reader's batcher (the sum of slipstream_queue_tokens)."""
    return sum(reader.batcher.queues.tokens for group in state.groups.values() for reader in group.readers)


# How often the first health check looks whether warm-up is over.
_WARM_UP_POLL_S = 0.1


class SlipstreamReplica:
    """One replica: the given settings in (`config.given_settings`), the Slipstream app out, built here."""

    def __init__(
        self, settings: dict[str, Any], engine_factory: EngineFactory | None = None, *, read_environment: bool = True
    ) -> None:
        # From a Serve config, the node's SLIPSTREAM_* variables apply over the given settings, as over a
        # config file; from `slipstream ray`, the given settings already hold its flags and environment.
        self._settings: ServiceSettings = resolve_settings(settings, os.environ if read_environment else {})
        self._engine_factory = engine_factory or load_engine_for
        self._state: ServiceState | None = None
        self._warmed_up = False

    def __serve_build_asgi_app__(self) -> ASGIApp:
        """Ray calls this on the replica, after `__init__`; Ray then runs the app's lifespan (start-up)."""
        settings = self._settings
        _log_to_stderr(settings.log_level)
        # Read by the Rust tokenizer at each call; set before the first one (as `slipstream serve` does).
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if settings.tokenizer_parallelism else "false"
        app: Litestar = create_app(settings, engine_factory=self._engine_factory)
        self._state = app.state.service
        replica_id = serve.get_replica_context().replica_tag
        for reader in self._state.readers.by_id.values():
            if reader.model is not None:
                d = reader.model.description
                log.info(
                    "replica %s, reader %s of group %s: %s on %s, variant %s, buckets %s, max batch %d",
                    replica_id,
                    reader.reader_id,
                    reader.consumer_group,
                    reader.model_name,
                    d.device,
                    d.variant,
                    reader.model.edges,
                    reader.model.max_batch_size,
                )
        return ReplicaHeader(app, replica_id)

    async def check_health(self) -> None:
        state = self._state
        if state is None:
            raise UnhealthyReplica("the app was not built")
        problem = replica_health(state)
        while not self._warmed_up and problem is None:
            # Ray awaits this once before the replica takes traffic: not before warm-up is over.
            if state.readers.started:
                self._warmed_up = True
                break
            await asyncio.sleep(_WARM_UP_POLL_S)
            problem = replica_health(state)
        if problem is not None:
            raise UnhealthyReplica(problem)

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {QUEUED_TOKENS: float(queued_tokens(self._state)) if self._state is not None else 0.0}


# `serve.ingress()` without an app: Ray calls `__serve_build_asgi_app__` on each replica.
SLIPSTREAM_DEPLOYMENT: Deployment = serve.deployment(name=DEPLOYMENT_NAME)(serve.ingress()(SlipstreamReplica))
