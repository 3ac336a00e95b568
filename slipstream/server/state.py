"""What the handlers share: settings, readers and their consumer groups, metrics; in `app.state.service`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from litestar import Request

from slipstream.batching.consumer_group import ConsumerGroup
from slipstream.batching.errors import NotFound, Unavailable, UnknownConsumerGroup
from slipstream.batching.group import ModelGroup
from slipstream.server.metrics import ServiceMetrics
from slipstream.server.readers import ReaderRegistry
from slipstream.server.settings import ServiceSettings


class ServiceState:
    def __init__(
        self,
        settings: ServiceSettings,
        readers: ReaderRegistry,
        metrics: ServiceMetrics,
        tokenizer_executor: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.readers = readers
        self.metrics = metrics
        self.tokenizer_executor = tokenizer_executor
        self.started_at = time.time()
        self.shutting_down = False

    @property
    def groups(self) -> dict[str, ConsumerGroup]:
        """Consumer groups with at least one loaded reader."""
        return self.readers.groups

    @property
    def ready(self) -> bool:
        return not self.shutting_down and self.readers.started

    def group(self, name: str) -> ConsumerGroup:
        """The group that serves a request, or the error that says why none can."""
        group = self.readers.groups.get(name)
        if group is not None and not self.shutting_down and group.serving():
            return group
        if not self.readers.in_group(name):
            raise UnknownConsumerGroup(f"unknown consumer_group {name!r}; this server has {self.readers.group_names()}")
        if self.shutting_down:
            raise Unavailable("the service is shutting down")
        raise Unavailable(self.readers.why_not_serving(name))

    def reader_model(self, reader_id: str) -> ModelGroup:
        """A reader's loaded model (for its tokenizer), or why there is none."""
        reader = self.readers.by_id.get(reader_id)
        if reader is None:
            raise NotFound(f"unknown reader_id {reader_id!r}; this server has {sorted(self.readers.by_id)}")
        if reader.model is None:
            raise Unavailable(f"reader {reader_id} is {reader.state}")
        return reader.model

    def begin_shutdown(self) -> None:
        """Stop admitting work (503); what is queued still runs.

        Called from the signal handler, so it only sets flags (no locks).
        """
        self.shutting_down = True
        self.readers.stop_admitting()


def service_state(request: Request[Any, Any, Any]) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state
