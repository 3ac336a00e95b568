"""What the handlers share: settings, consumer groups, metrics; in `app.state.service`."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from litestar import Request

from slipstream.batching.errors import Unavailable, UnknownConsumerGroup
from slipstream.batching.group import ModelGroup
from slipstream.server.metrics import ServiceMetrics
from slipstream.server.settings import ServiceSettings


class ServiceState:
    def __init__(
        self,
        settings: ServiceSettings,
        groups: dict[str, ModelGroup],
        metrics: ServiceMetrics,
        tokenizer_executor: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.groups = groups
        self.metrics = metrics
        self.tokenizer_executor = tokenizer_executor
        self.readers = {group.reader_id: group for group in groups.values()}
        self.shutting_down = False
        self.warmup_task: asyncio.Task[None] | None = None
        self.warmup_error: str | None = None

    @property
    def ready(self) -> bool:
        return not self.shutting_down and all(group.ready for group in self.groups.values())

    def group(self, name: str) -> ModelGroup:
        """The group that serves a request, or the error that says why none can."""
        group = self.groups.get(name)
        if group is None:
            raise UnknownConsumerGroup(f"unknown consumer_group {name!r}; this server has {sorted(self.groups)}")
        if self.shutting_down:
            raise Unavailable("the service is shutting down")
        if not group.ready:
            raise Unavailable(self.warmup_error or f"consumer group {name!r} is still warming up")
        return group

    def begin_shutdown(self) -> None:
        """Stop admitting work (503); what is queued still runs.

        Called from the signal handler, so it only sets flags (no locks).
        """
        self.shutting_down = True
        for group in self.groups.values():
            group.batcher.stop_admitting()


def service_state(request: Request[Any, Any, Any]) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state
