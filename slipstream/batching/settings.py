"""A consumer group's settings: which artifact, on which device, batched how.

A group's settings are its engine's settings (`EngineSettings`: buckets,
batch size, CPU, CUDA and TensorRT providers) plus the group's own, so each
engine knob is defined once, in `slipstream.engines.settings`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from slipstream.batching.chunking import LongText
from slipstream.defaults import DEFAULT_ARTIFACT_DIR
from slipstream.engines.base import DeviceChoice
from slipstream.engines.settings import EngineSettings
from slipstream.manifest import MIN_CHUNK_WINDOW, VariantName
from slipstream.settings import PositiveFloat, PositiveInt, setting

PadTo = Literal["auto", "bucket", "longest"]
ChunkAggregateChoice = Literal["auto", "max", "mean"]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class GroupSettings(EngineSettings, frozen=True):
    """One consumer group: one model artifact behind its own batcher."""

    artifact: Annotated[str, setting("Export artifact directory to serve.")] = str(DEFAULT_ARTIFACT_DIR)
    device: Annotated[
        DeviceChoice, setting("Execution device: auto (TensorRT, else CUDA, else CPU) or a strict choice.")
    ] = "auto"
    variant: Annotated[
        VariantName | None,
        setting(
            "Model variant; unset lets the engine choose for the device (int8 on CPU, fp16 on GPU, each only "
            "if its export measured it faithful to fp32; fp32 otherwise). Name one to serve an opt-in variant."
        ),
    ] = None
    max_batch_tokens: Annotated[
        PositiveInt | None, setting("Most padded tokens (items x bucket length) in one batch; unset = no limit.")
    ] = None
    batch_duration_millis: Annotated[
        float,
        setting(
            "Wait bound: an item that has waited this long is served before fuller buckets. An idle engine "
            "never waits.",
            ge=0,
        ),
    ] = 10.0
    max_queue_tokens: Annotated[
        int,
        setting(
            "Backpressure: most tokens queued for one reader of this group; past it requests get 429. The "
            "default holds one largest request (256 items x 512 tokens).",
            ge=1,
        ),
    ] = 131_072
    max_items_per_request: Annotated[int, setting("Most texts or pairs in one request; more gets 413.", ge=1)] = 256
    # A CPU runs any shape, so padding past the longest item is pure waste there;
    # GPU engines run only the prepared (warmed-up) bucket shapes
    # (docs/design-notes.md#pad-to-the-longest-item-on-cpu).
    pad_to: Annotated[
        PadTo,
        setting(
            "Pad each batch to its bucket's edge (fixed shapes, all warmed up: what GPU engines need) or only "
            "to its longest item. auto: longest on CPU, bucket on GPU."
        ),
    ] = "auto"
    truncate: Annotated[
        bool, setting("Truncate over-long inputs by default (a request's `truncate` overrides it).")
    ] = True
    batch_timeout_s: Annotated[
        PositiveFloat | None,
        setting(
            "Watchdog: a batch still running after this many seconds (a hung engine) is given up; its "
            "requests get 504 and its worker is replaced. Keep it above the slowest real batch (the largest "
            "batch of the longest bucket). Unset: no watchdog."
        ),
    ] = 120.0
    # Long inputs (slipstream/batching/chunking.py).
    long_text: Annotated[
        LongText | None,
        setting(
            "What a request that does not say (by long_text or truncate) does with an input longer than the "
            "model's window: truncate it, reject it (422), or chunk it (score overlapping windows and aggregate "
            "their logits). Unset: follows `truncate`."
        ),
    ] = None
    chunk_window: Annotated[
        Annotated[int, msgspec.Meta(ge=MIN_CHUNK_WINDOW)] | None,
        setting(
            "Chunking: tokens per window, special tokens included; unset = the artifact's recommended window "
            "(`slipstream export --chunk-window`), else the model's maximum length (also the cap). Models trained "
            "on short passages rank better with short windows."
        ),
    ] = None
    chunk_stride: Annotated[
        NonNegativeInt | None,
        setting(
            "Chunking: tokens each window repeats from the one before; unset = a quarter of the window (the "
            "tokens the windowed text gets in it). Capped at half the window."
        ),
    ] = None
    chunk_aggregate: Annotated[
        ChunkAggregateChoice,
        setting(
            "Chunking: how an input's window logits become its own: max (its best window) or mean; auto: max "
            "for one-label models (rerankers), mean for classifiers."
        ),
    ] = "auto"
    max_chunks_per_input: Annotated[int, setting("Chunking: most windows one input may take; more gets 413.", ge=1)] = (
        64
    )

    def default_long_text(self) -> LongText:
        if self.long_text is not None:
            return self.long_text
        return "truncate" if self.truncate else "reject"
