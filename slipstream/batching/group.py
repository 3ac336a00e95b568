"""One reader of a consumer group: one artifact's manifest, tokenizer, engine and batcher.

`ModelGroup.score` is the whole path of one request below HTTP: tokenize in
a worker thread, queue in the batcher, return logits in input order. A
consumer group of several readers (`consumer_group.ConsumerGroup`) sends each
request to one of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from slipstream.batching.batcher import Batcher
from slipstream.batching.chunking import (
    ChunkAggregate,
    Chunking,
    FirstTextTooLong,
    LongText,
    TooManyWindows,
    aggregate,
    resolve_long_text,
)
from slipstream.batching.errors import DeadlineExceeded, InvalidInput, PayloadTooLarge
from slipstream.batching.metrics import MetricsSink, NullMetrics
from slipstream.batching.settings import GroupSettings
from slipstream.batching.tokenization import (
    ChunkingUnsupported,
    EmptyInput,
    InputTooLong,
    TextEncoder,
    TextInput,
    TruncationDirection,
)
from slipstream.batching.tokenize_queue import TokenizeQueue
from slipstream.engines.base import Engine, EngineDescription
from slipstream.engines.buckets import warmup_shapes
from slipstream.manifest import Manifest, ManifestError, load_manifest

Logits = npt.NDArray[np.float32]
# Builds the engine of a group; the default loads it with `slipstream.engines`.
EngineFactory = Callable[[GroupSettings, Manifest], Engine]


@dataclass(frozen=True, slots=True)
class Chunks:
    """How the inputs of a long_text "chunk" request were windowed."""

    windows: npt.NDArray[np.int64]  # per input: how many windows it took (1: it fitted)
    best: npt.NDArray[np.int64] | None  # [inputs, num_labels]: the window that gave each max (max aggregation)


@dataclass(frozen=True, slots=True)
class Scored:
    logits: Logits  # [items, num_labels], in input order
    tokenization_s: float
    queue_s: float
    inference_s: float
    chunks: Chunks | None = None


def load_engine_for(settings: GroupSettings, manifest: Manifest) -> Engine:
    """The engines stage's loader, given this group's device, variant and engine settings."""
    from slipstream.engines import load_engine

    del manifest  # the loader reads it from the artifact itself
    return load_engine(
        settings.artifact, device=settings.device, variant=settings.variant, settings=settings.engine_settings()
    )


def reader_id_for(group: str, manifest: Manifest, variant: str) -> str:
    """Stable across restarts for the same model file: group name + model hash prefix."""
    digest = manifest.variants[variant].sha256[:12] if variant in manifest.variants else "model"
    return f"{group}-{digest}"


class ModelGroup:
    def __init__(
        self,
        name: str,
        settings: GroupSettings,
        manifest: Manifest,
        engine: Engine,
        *,
        tokenizer_executor: Executor,
        metrics: MetricsSink | None = None,
        inline_tokenize_chars: int = 0,
        reader_id: str | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.manifest = manifest
        self.engine = engine
        self.description: EngineDescription = engine.describe()
        self.reader_id = reader_id or reader_id_for(name, manifest, self.description.variant)
        self.metrics: MetricsSink = metrics or NullMetrics()
        self._tokenizer_executor = tokenizer_executor
        # The model's maximum, or the configured max_sequence_length when lower (the engine's last edge).
        self.max_length = settings.longest_input(manifest.max_sequence_length)
        self.encoder = TextEncoder(
            Path(settings.artifact) / manifest.tokenizer.file,
            max_length=self.max_length,
            uses_token_type_ids="token_type_ids" in engine.input_names,
            pair_truncation=manifest.tokenizer.pair_truncation,
        )
        if engine.num_labels != manifest.num_labels:
            raise ManifestError(
                f"group {name!r}: the engine has {engine.num_labels} outputs but the manifest "
                f"{manifest.num_labels} labels; the artifact is inconsistent, export it again"
            )
        self.tokenize_queue = TokenizeQueue(self.encoder, tokenizer_executor, inline_chars=inline_tokenize_chars)
        # The engine's edges: the configured ones (or its device's), capped at the model's maximum.
        self.edges = engine.buckets
        self.max_batch_size = engine.max_batch_size
        self.pad_to = (
            settings.pad_to
            if settings.pad_to != "auto"
            else ("longest" if self.description.device == "cpu" else "bucket")
        )
        self.batcher = Batcher(
            engine,
            edges=self.edges,
            max_batch_size=self.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            batch_duration_millis=settings.batch_duration_millis,
            max_queue_tokens=settings.max_queue_tokens,
            pad_token_id=manifest.tokenizer.pad_token_id,
            pad_to_longest=self.pad_to == "longest",
            metrics=metrics,
            name=name,
            batch_timeout_s=settings.batch_timeout_s,
        )
        # Windows are at most as long as the inputs this reader takes (max_sequence_length included).
        window = settings.chunk_window or manifest.chunk_window or self.max_length
        self.chunking = Chunking(
            window=min(window, self.max_length),
            stride=settings.chunk_stride,
            max_windows=settings.max_chunks_per_input,
        )
        self.chunk_aggregate: ChunkAggregate = (
            settings.chunk_aggregate
            if settings.chunk_aggregate != "auto"
            else ("max" if manifest.num_labels == 1 else "mean")
        )
        self.ready = False

    @classmethod
    def load(
        cls,
        name: str,
        settings: GroupSettings,
        *,
        tokenizer_executor: Executor,
        metrics: MetricsSink | None = None,
        engine_factory: EngineFactory = load_engine_for,
        inline_tokenize_chars: int = 0,
    ) -> ModelGroup:
        manifest = load_manifest(settings.artifact)
        engine = engine_factory(settings, manifest)
        return cls(
            name,
            settings,
            manifest,
            engine,
            tokenizer_executor=tokenizer_executor,
            metrics=metrics,
            inline_tokenize_chars=inline_tokenize_chars,
        )

    def warmup_shapes(self) -> list[tuple[int, int]]:
        capacities = [self.batcher.queues.capacity(bucket) for bucket in range(len(self.edges))]
        return warmup_shapes(self.edges, capacities, fixed_shapes=self.description.device != "cpu")

    async def start(self) -> None:
        await self.batcher.start()

    async def warmup(self) -> None:
        # The tokenizer's first call pays one-off set-up costs; pay them here.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._tokenizer_executor,
            lambda: self.encoder.encode([("warm up", "the tokenizer")], truncate=True),
        )
        await self.batcher.warmup(self.warmup_shapes())
        self.ready = True

    async def score(
        self,
        items: Sequence[TextInput],
        *,
        truncate: bool | None = None,
        long_text: LongText | None = None,
        direction: TruncationDirection = "right",
        timeout_s: float | None = None,
    ) -> Scored:
        """Logits per input; `long_text` (else `truncate`, else the group's setting) says what over-long ones get."""
        if len(items) > self.settings.max_items_per_request:
            raise PayloadTooLarge(
                f"{len(items)} inputs in one request; this consumer group takes at most "
                f"{self.settings.max_items_per_request}"
            )
        mode = resolve_long_text(long_text, truncate, self.settings.default_long_text())
        started = time.perf_counter()
        try:
            encoded = await self.tokenize_queue.encode(
                items,
                truncate=mode == "truncate",
                direction=direction,
                chunking=self.chunking if mode == "chunk" else None,
            )
        except TooManyWindows as exc:
            raise PayloadTooLarge(str(exc)) from None
        except (InputTooLong, EmptyInput, FirstTextTooLong, ChunkingUnsupported) as exc:
            raise InvalidInput(str(exc)) from None
        except Exception as exc:  # the tokenizer refused an input outright
            raise InvalidInput(f"an input could not be tokenized: {exc}") from None
        tokenization_s = time.perf_counter() - started
        self.metrics.tokenized(tokenization_s)
        if timeout_s is not None:  # the deadline counts from arrival, tokenization included
            timeout_s -= tokenization_s
            if timeout_s <= 0:
                raise DeadlineExceeded("the deadline passed before the work ran (during tokenization)")
        request = self.batcher.submit(encoded, timeout_s=timeout_s)
        logits = await request.future
        chunks = None
        if encoded.windows_per_input is not None:
            windows = encoded.windows_per_input
            logits, best = aggregate(logits, windows, self.chunk_aggregate)
            chunks = Chunks(windows, best)
            self.metrics.chunked(int(windows.size), len(encoded))
        return Scored(logits, tokenization_s, request.queue_wait_s, request.inference_s, chunks)

    def tokens(self, text: str) -> list[str]:
        return self.encoder.tokens(text)
