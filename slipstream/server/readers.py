"""Every reader of the server, and its life: exporting, loading, warming up, serving, draining.

A reader is one loaded model instance (`ModelGroup`: engine, tokenizer,
batcher) in a consumer group (`ConsumerGroup`). Readers come from three places:

- the command line and config file: loaded before the server listens (a bad
  artifact fails the start), warmed up in the background after;
- the readers file (`readers_file`): those added through the management API
  before a restart, brought up in the background after those above;
- the management API (`POST /reader`): answered at once, then exported (a hub
  id or save_pretrained directory, in a child process), loaded (in a thread)
  and warmed up in the background.

A reader that fails any of these steps is kept, in state "failed: <reason>",
until it is removed; it never disturbs the readers that serve. Removing a
reader drains it: it stops admitting at once, its queued and running work
finishes within `shutdown_timeout_s` (the rest fails with 503), then its
engine is released. `/ready` waits only for the readers there were at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from slipstream.batching.consumer_group import ConsumerGroup
from slipstream.batching.errors import Conflict, InvalidInput, NotFound, Unavailable
from slipstream.batching.group import EngineFactory, ModelGroup, reader_id_for
from slipstream.batching.settings import GroupSettings
from slipstream.engines.base import EngineError
from slipstream.manifest import ManifestError, load_manifest
from slipstream.server.config import ConfigError
from slipstream.server.management.reader_config import ReaderRequest, reader_request
from slipstream.server.metrics import GroupMetrics, ServiceMetrics
from slipstream.server.model_sources import ExportFailed, ModelSource, export_model, export_variants
from slipstream.server.readers_file import ReadersFile, SavedReader
from slipstream.server.settings import ServiceSettings

log = logging.getLogger("slipstream.server")

Phase = Literal["exporting", "loading", "ready", "draining", "failed"]
# config: the command line or config file; management: the management API (and the readers file).
Origin = Literal["config", "management"]


@dataclass(eq=False)
class Reader:
    reader_id: str
    consumer_group: str
    model_name: str
    settings: GroupSettings
    origin: Origin
    at_start: bool  # there when the server started: /ready waits for it
    phase: Phase = "loading"
    error: str | None = None
    model: ModelGroup | None = None
    metrics: GroupMetrics | None = None
    source: ModelSource | None = None  # what model_name named (None for the config's readers)
    config: dict[str, Any] = field(default_factory=dict)  # the reader config as given, no secrets
    ignored_fields: list[str] = field(default_factory=list)
    export_pid: int | None = None  # while exporting
    exported_artifact: Path | None = None  # exported by this server for this reader: deleted with it
    created_at: float = field(default_factory=time.time)
    access_token: str | None = field(default=None, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    removal: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def state(self) -> str:
        return f"failed: {self.error}" if self.phase == "failed" else self.phase

    def fail(self, reason: str) -> None:
        self.phase, self.error = "failed", reason
        log.error("reader %s (%s) failed: %s", self.reader_id, self.model_name, reason)


class ReaderRegistry:
    def __init__(
        self,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        tokenizer_executor: Executor,
        engine_factory: EngineFactory,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tokenizer_executor = tokenizer_executor
        self.engine_factory = engine_factory
        self.by_id: dict[str, Reader] = {}
        self.groups: dict[str, ConsumerGroup] = {}  # the loaded readers of each group
        self.readers_file = ReadersFile(settings.readers_file) if settings.readers_file else None
        self._closing = False
        self._startup: asyncio.Task[None] | None = None
        self._announced = False  # the "ready" line is logged
        self._export_lock = asyncio.Lock()  # one export at a time: each takes every core it can
        self._save_lock = asyncio.Lock()

    # -- what there is -------------------------------------------------------

    def get(self, reader_id: str) -> Reader:
        reader = self.by_id.get(reader_id)
        if reader is None:
            raise NotFound(f"unknown reader_id {reader_id!r}; this server has {sorted(self.by_id)}")
        return reader

    def group_names(self) -> list[str]:
        return sorted({reader.consumer_group for reader in self.by_id.values()})

    def in_group(self, name: str) -> list[Reader]:
        return [reader for reader in self.by_id.values() if reader.consumer_group == name]

    @property
    def started(self) -> bool:
        """The readers there were at start (and still are) are up: those of the configuration serve,
        those of the readers file serve or have failed (a model that is gone must not keep a
        restarted server out of service; /status shows why)."""
        return self.start_problem() is None

    def start_problem(self) -> str | None:
        """Why `started` is False: the first reader from the start that is not up yet, and its state."""
        for reader in self.by_id.values():
            up = reader.ready or (reader.origin == "management" and reader.phase == "failed")
            if reader.at_start and not up:
                return f"reader {reader.reader_id} of group {reader.consumer_group!r} is {reader.state}"
        return None

    def why_not_serving(self, group: str) -> str:
        states = ", ".join(f"{reader.reader_id} {reader.state}" for reader in self.in_group(group))
        return f"consumer group {group!r} has no ready reader ({states})"

    # -- start-up ------------------------------------------------------------

    def load_configured(self) -> None:
        """Load the readers of the command line and config file, before serving: errors propagate."""
        for name, reader_settings in self.settings.readers_by_group().items():
            for settings in reader_settings:
                model, metrics = self._build(name, settings, None)
                reader = Reader(model.reader_id, name, settings.artifact, settings, "config", at_start=True)
                self._register(reader)
                try:
                    self._join(reader, model, metrics)
                except Conflict as exc:
                    raise ConfigError(f"group {name!r}: {exc.message}") from None
        if self.readers_file is not None:
            for saved in self.readers_file.load():
                self._restore(saved)

    def _restore(self, saved: SavedReader) -> None:
        """A reader from the readers file; a config that is no longer valid makes it a failed reader."""
        try:
            request = reader_request(saved.config, self.settings.reader_defaults)
        except InvalidInput as exc:
            model_name = str(saved.config.get("model_name", "?"))
            group = str(saved.config.get("consumer_group") or "primary")
            reader = Reader(saved.reader_id, group, model_name, self.settings.reader_defaults, "management", True)
            reader.config = saved.config
            self._register(reader)
            reader.fail(f"{exc.message} (from the readers file)")
            return
        reader = self._from_request(saved.reader_id, request, at_start=True)
        if saved.exported_artifact and Path(saved.exported_artifact, "manifest.json").is_file():
            reader.exported_artifact = Path(saved.exported_artifact)  # exported before: not again
            reader.settings = msgspec.structs.replace(reader.settings, artifact=saved.exported_artifact)
            reader.phase = "loading"
        self._register(reader)

    async def start(self) -> None:
        """On the event loop, before serving: start the engine workers; warm-up and the rest follow
        in the background."""
        for reader in self.by_id.values():
            if reader.model is not None:
                await reader.model.start()
        self._startup = asyncio.get_running_loop().create_task(self._start_up())

    async def _start_up(self) -> None:
        # One group after the other: warm-ups running at once would only compete for the cores.
        for reader in list(self.by_id.values()):
            if reader.model is not None and reader.phase == "loading" and reader.reader_id in self.by_id:
                await self._warm_up(reader)
        for reader in list(self.by_id.values()):
            if reader.model is None and reader.phase != "failed":
                reader.task = asyncio.get_running_loop().create_task(self._bring_up(reader))
        self._announce_if_started()

    def _announce_if_started(self) -> None:
        if self._announced or not self.started:
            return
        self._announced = True
        log.info(
            "ready: %s",
            ", ".join(
                f"{r.reader_id} ({r.model.description.device}, {r.model.description.variant})"
                for r in self.by_id.values()
                if r.model is not None
            ),
        )

    # -- adding --------------------------------------------------------------

    async def add(self, request: ReaderRequest) -> Reader:
        """Register a reader and bring it up in the background; Conflict when it cannot join."""
        if self._closing:
            raise Unavailable("the service is shutting down")
        if len(self.by_id) >= self.settings.max_readers:
            raise Conflict(
                f"this server has {len(self.by_id)} readers, max_readers is {self.settings.max_readers}; "
                "remove one first (DELETE /reader/{reader_id})"
            )
        group = self.groups.get(request.consumer_group)
        if group is not None and request.source.manifest is not None:
            group.check_compatible(request.source.manifest)
        reader_id = self._new_id(request.consumer_group)
        reader = self._from_request(reader_id, request, at_start=False)
        self._register(reader)
        reader.task = asyncio.get_running_loop().create_task(self._bring_up(reader))
        await self._save()
        log.info("reader %s added to group %r: %s", reader_id, request.consumer_group, request.model_name)
        return reader

    def _from_request(self, reader_id: str, request: ReaderRequest, *, at_start: bool) -> Reader:
        settings = request.settings
        if request.source.needs_export:
            exported = Path(self.settings.export_dir).expanduser() / reader_id
            settings = msgspec.structs.replace(settings, artifact=str(exported))
        reader = Reader(reader_id, request.consumer_group, request.model_name, settings, "management", at_start)
        reader.source, reader.config, reader.ignored_fields = request.source, request.config, request.ignored_fields
        reader.access_token = request.access_token
        reader.phase = "exporting" if request.source.needs_export else "loading"
        return reader

    def _new_id(self, group: str) -> str:
        while True:
            reader_id = f"{group}-{secrets.token_hex(6)}"
            if reader_id not in self.by_id:
                return reader_id

    def _register(self, reader: Reader) -> None:
        self.by_id[reader.reader_id] = reader
        gauge = self.metrics.reader_ready.labels(reader.consumer_group, reader.reader_id)
        gauge.set_function(lambda: 1.0 if reader.ready else 0.0)

    async def _bring_up(self, reader: Reader) -> None:
        """Export (when needed), load and warm up a management reader; on failure say why and stay."""
        try:
            if reader.source is not None and reader.source.needs_export and reader.exported_artifact is None:
                await self._export(reader)
            reader.phase = "loading"
            model, metrics = await self._build_in_thread(reader)
            self._join(reader, model, metrics)
            await model.start()
            await self._warm_up(reader)
        except asyncio.CancelledError:
            await self._leave(reader, timeout_s=0)
            raise
        except Exception as exc:  # a bad model fails this reader only
            if not isinstance(exc, _EXPECTED_FAILURES):
                log.exception("reader %s: unexpected error while bringing it up", reader.reader_id)
            await self._leave(reader, timeout_s=0)
            reader.fail(_one_line(exc))
        if reader.at_start:
            self._announce_if_started()

    async def _export(self, reader: Reader) -> None:
        assert reader.source is not None
        target = Path(reader.settings.artifact)
        async with self._export_lock:

            def started(pid: int) -> None:
                reader.export_pid = pid

            try:
                await export_model(
                    reader.source,
                    target,
                    variants=export_variants(reader.settings.device, reader.settings.variant),
                    max_length=reader.settings.max_sequence_length,
                    timeout_s=self.settings.export_timeout_s,
                    access_token=reader.access_token,
                    on_start=started,
                )
            finally:
                reader.export_pid = None
        reader.exported_artifact = target
        group = self.groups.get(reader.consumer_group)
        if group is not None:
            group.check_compatible(load_manifest(target))
        await self._save()

    async def _build_in_thread(self, reader: Reader) -> tuple[ModelGroup, GroupMetrics]:
        building = asyncio.ensure_future(
            asyncio.to_thread(self._build, reader.consumer_group, reader.settings, reader.reader_id)
        )
        try:
            return await asyncio.shield(building)
        except asyncio.CancelledError:  # the thread cannot be stopped: drop what it builds when done
            building.add_done_callback(_forget_built)
            raise

    def _build(self, group: str, settings: GroupSettings, reader_id: str | None) -> tuple[ModelGroup, GroupMetrics]:
        """Manifest, engine, tokenizer and batcher of a reader (slow: a worker thread's job, or the start's)."""
        manifest = load_manifest(settings.artifact)
        engine = self.engine_factory(settings, manifest)
        if reader_id is None:  # the config's readers: named after their model, as in earlier versions
            reader_id = self._unique(reader_id_for(group, manifest, engine.describe().variant))
        metrics = self.metrics.reader(group, reader_id)
        model = ModelGroup(
            group,
            settings,
            manifest,
            engine,
            tokenizer_executor=self.tokenizer_executor,
            metrics=metrics,
            inline_tokenize_chars=self.settings.inline_tokenize_chars,
            reader_id=reader_id,
        )
        return model, metrics

    def _unique(self, reader_id: str) -> str:
        """`reader_id`, or with the first free suffix `-2`, `-3`, ... (replicas of one model in a group)."""
        candidate, number = reader_id, 1
        while candidate in self.by_id:
            number += 1
            candidate = f"{reader_id}-{number}"
        return candidate

    def _join(self, reader: Reader, model: ModelGroup, metrics: GroupMetrics) -> None:
        reader.model, reader.metrics = model, metrics
        self.groups.setdefault(reader.consumer_group, ConsumerGroup(reader.consumer_group)).add(model)

    async def _warm_up(self, reader: Reader) -> None:
        assert reader.model is not None
        started = time.perf_counter()
        try:
            await reader.model.warmup()
        except Exception as exc:  # it stays out of service, and says why
            reader.fail(f"warm-up failed: {_one_line(exc)}")
            return
        if reader.phase != "loading":  # removed while it warmed up
            return
        reader.phase = "ready"
        d = reader.model.description
        log.info(
            "reader %s of group %r ready: %s on %s, variant %s (%d shapes warmed up in %.1f s)",
            reader.reader_id,
            reader.consumer_group,
            reader.model_name,
            d.device,
            d.variant,
            len(reader.model.warmup_shapes()),
            time.perf_counter() - started,
        )

    # -- removing ------------------------------------------------------------

    async def remove(self, reader_id: str) -> None:
        """Drain a reader and forget it; a second call while it drains waits for the same drain."""
        reader = self.get(reader_id)
        if reader.removal is None:
            reader.removal = asyncio.get_running_loop().create_task(self._remove(reader))
        await asyncio.shield(reader.removal)

    async def _remove(self, reader: Reader) -> None:
        if reader.task is not None and not reader.task.done():
            reader.task.cancel()  # an export child is killed, a load's result discarded
            await asyncio.gather(reader.task, return_exceptions=True)
        if reader.model is not None:
            reader.phase = "draining"
            log.info("reader %s draining", reader.reader_id)
            await self._leave(reader, timeout_s=self.settings.shutdown_timeout_s)
        del self.by_id[reader.reader_id]
        with contextlib.suppress(KeyError):
            self.metrics.reader_ready.remove(reader.consumer_group, reader.reader_id)
        if reader.exported_artifact is not None:
            await asyncio.to_thread(shutil.rmtree, reader.exported_artifact, ignore_errors=True)
        await self._save()
        log.info("reader %s removed from group %r", reader.reader_id, reader.consumer_group)

    async def _leave(self, reader: Reader, *, timeout_s: float) -> None:
        """Take a loaded reader out of its group (draining it) and release its engine."""
        model, reader.model = reader.model, None
        if model is None:
            return
        group = self.groups.get(reader.consumer_group)
        if group is not None and model in group.readers:
            await group.drain(model.reader_id, timeout_s)
            if not group:
                del self.groups[reader.consumer_group]
        else:
            await model.batcher.close(timeout_s)
        if reader.metrics is not None:
            reader.metrics.forget()

    # -- shutdown ------------------------------------------------------------

    def stop_admitting(self) -> None:
        """From a signal handler: flags only."""
        self._closing = True
        for group in self.groups.values():
            for model in group.readers:
                model.batcher.stop_admitting()

    async def close(self, timeout_s: float) -> None:
        """Stop bringing readers up, and drain every loaded one within `timeout_s`.

        The readers file keeps the management API's readers for the next start.
        """
        self.stop_admitting()
        pending = [task for task in (self._startup, *(r.task for r in self.by_id.values())) if task is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        drains = [group.drain(model.reader_id, timeout_s) for group in self.groups.values() for model in group.readers]
        await asyncio.gather(*drains, return_exceptions=True)

    # -- persistence -----------------------------------------------------------

    async def _save(self) -> None:
        if self.readers_file is None or self._closing:
            return
        async with self._save_lock:  # each write takes the list as it is then: the last one is current
            saved = [
                SavedReader(
                    reader_id=r.reader_id,
                    config=r.config,
                    exported_artifact=str(r.exported_artifact) if r.exported_artifact else None,
                )
                for r in self.by_id.values()
                if r.origin == "management"
            ]
            try:
                await asyncio.to_thread(self.readers_file.save, saved)
            except OSError as exc:  # serving goes on; the change lasts until the process ends
                log.error("could not write the readers file %s: %s", self.readers_file.path, exc)


# What a bad model or a bad config raises: the message says it all, no traceback needed.
_EXPECTED_FAILURES = (ExportFailed, InvalidInput, Conflict, ManifestError, EngineError, OSError)


def _forget_built(building: asyncio.Future[tuple[ModelGroup, GroupMetrics]]) -> None:
    if not building.cancelled() and building.exception() is None:
        building.result()[1].forget()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, ExportFailed | InvalidInput | Conflict | ManifestError | EngineError):
        return text.splitlines()[0] if text else type(exc).__name__
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
