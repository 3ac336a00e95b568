"""The Ray Serve deployment: each replica runs the whole per-machine Slipstream.

A replica builds the Litestar app of `slipstream.server.app.create_app` itself,
when Ray starts it (`serve.ingress` with a builder, so the app, its engines and
threads are never pickled): the engines, the length-bucketed batchers, every route
of every API family, errors, auth and metrics. Ray Serve only routes requests to
the replicas and scales them.

Ray's hooks, tied to the batcher and the engines:
- `check_health`: the first call (during the replica's start) waits for warm-up, so
  Ray routes nothing to a replica before every bucket has run once; later calls fail
  when warm-up failed or an engine worker thread died, and Ray replaces the replica.
- `record_autoscaling_stats`: the tokens queued in the replica's batchers, what
  `slipstream.ray_serve.autoscaling.QueuedTokensPolicy` scales on.
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
    """Why this replica cannot serve, or None when it can (warm-up still running counts as able)."""
    if state.warmup_error:
        return state.warmup_error
    for group in state.groups.values():
        if not group.batcher.workers_alive:
            return f"an engine worker of group {group.name!r} has stopped"
    return None


def queued_tokens(state: ServiceState) -> int:
    """Tokens waiting in every group's batcher (the sum of slipstream_queue_tokens)."""
    return sum(group.batcher.queues.tokens for group in state.groups.values())


class SlipstreamReplica:
    """One replica: the given settings in (`config.given_settings`), the Slipstream app out, built here."""

    def __init__(self, settings: dict[str, Any], engine_factory: EngineFactory | None = None) -> None:
        self._settings: ServiceSettings = resolve_settings(settings, os.environ)
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
        for group in self._state.groups.values():
            d = group.description
            log.info(
                "replica %s, group %s: %s on %s, variant %s, buckets %s, max batch %d",
                replica_id,
                group.name,
                group.manifest.source.model,
                d.device,
                d.variant,
                group.edges,
                group.max_batch_size,
            )
        return ReplicaHeader(app, replica_id)

    async def check_health(self) -> None:
        state = self._state
        if state is None:
            raise UnhealthyReplica("the app was not built")
        if not self._warmed_up and state.warmup_task is not None:
            # Ray awaits this once before the replica takes traffic: not before warm-up is done.
            await asyncio.shield(state.warmup_task)
            self._warmed_up = True
        problem = replica_health(state)
        if problem is not None:
            raise UnhealthyReplica(problem)

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {QUEUED_TOKENS: float(queued_tokens(self._state)) if self._state is not None else 0.0}


# `serve.ingress()` without an app: Ray calls `__serve_build_asgi_app__` on each replica.
SLIPSTREAM_DEPLOYMENT: Deployment = serve.deployment(name=DEPLOYMENT_NAME)(serve.ingress()(SlipstreamReplica))
