"""Typed settings of an engine: every ONNX Runtime knob we expose, defined once.

A consumer group's settings embed these (`slipstream.batching.settings`), so
flags, environment variables, config-file keys and docs/serving.md all derive
from the definitions here. Defaults suit a MiniLM/BERT-sized classifier behind
the length-bucketed batcher; docs/engines.md#engine-settings explains them
and docs/design-notes.md has the measurements behind them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from slipstream.settings import PositiveInt, Settings, setting

# Positive lengths, at least one.
BucketEdges = Annotated[list[Annotated[int, msgspec.Meta(ge=1)]], msgspec.Meta(min_length=1)]
# Where TensorRT engines and timing caches are kept unless configured otherwise.
DEFAULT_TENSORRT_CACHE_DIR = Path.home() / ".cache" / "slipstream" / "tensorrt"


class CpuSettings(Settings, frozen=True):
    """The CPU execution provider."""

    # One thread per run, one run per core: a small batch parallelises poorly
    # inside operators, and a multi-threaded run stalls at every operator's
    # barrier whenever the service's own threads preempt one of its workers
    # (docs/design-notes.md#one-single-threaded-run-per-core).
    intra_op_threads: Annotated[
        int,
        setting(
            "Threads inside one run; 0 = every physical core this process may use (affinity and cgroup "
            "quota respected). Raise it for lower idle latency on a large model, at some cost in throughput.",
            ge=0,
        ),
    ] = 1
    parallel_runs: Annotated[
        int,
        setting(
            "Batches that may run at once, each on its own thread through one session (one copy of the "
            "weights); 0 = physical cores / intra_op_threads.",
            ge=0,
        ),
    ] = 0
    # Long inputs set the tail latency at low load and parallelise well inside
    # operators; under load runs never start alone, so throughput is unchanged
    # (docs/design-notes.md#wide-runs-for-long-batches-at-low-load).
    wide_from_length: Annotated[
        int,
        setting(
            "A batch padded to at least this many tokens that starts while nothing else runs uses a "
            "second session with every physical core (it holds a second copy of the weights); 0 = never.",
            ge=0,
        ),
    ] = 128
    # The tokenizer and the HTTP loop share the cores; a spinning idle pool steals their time
    # (docs/design-notes.md#no-spinning-intra-op-threads).
    allow_spinning: Annotated[
        bool, setting("Let intra-op workers spin before sleeping (faster offline, slower when cores are shared).")
    ] = False
    enable_memory_arena: Annotated[
        bool, setting("Keep freed blocks for reuse: bucketed shapes recur, so after warm-up no run allocates.")
    ] = True
    enable_memory_pattern: Annotated[bool, setting("Plan intermediate buffers per shape (bucketed shapes repeat).")] = (
        True
    )


class CudaSettings(Settings, frozen=True):
    """The CUDA execution provider (also TensorRT's fallback for nodes it rejects)."""

    device_id: Annotated[int, setting("GPU to run on.", ge=0)] = 0
    # Transformers have no convolutions; exhaustive search only adds start-up time for models that do.
    cudnn_conv_algo_search: Annotated[
        Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"], setting("cuDNN convolution algorithm search.")
    ] = "HEURISTIC"
    # Copies ordered with compute: a buffer reused for the next batch is never
    # overwritten while a kernel still reads it.
    do_copy_in_default_stream: Annotated[bool, setting("Copy inputs and outputs on the default stream.")] = True
    # Bucket shapes repeat: doubling the arena on each growth wastes up to half.
    arena_extend_strategy: Annotated[
        Literal["kNextPowerOfTwo", "kSameAsRequested"], setting("How the CUDA memory arena grows.")
    ] = "kSameAsRequested"
    gpu_mem_limit: Annotated[int, setting("Bytes the CUDA arena may use; 0 = no limit.", ge=0)] = 0
    use_tf32: Annotated[
        bool | None,
        setting("TF32 matmuls; unset = off for fp32 (so it matches the exported model), on for fp16."),
    ] = None
    cuda_graphs: Annotated[
        bool,
        setting(
            "Capture one CUDA graph per (batch, length) shape and replay it: less launch overhead for "
            "small batches; needs every node on the CUDA provider. Opt-in until measured on a GPU."
        ),
    ] = False


class TensorRtSettings(Settings, frozen=True):
    """The TensorRT execution provider."""

    cache_dir: Annotated[
        str, setting("Directory of TensorRT engines and timing caches, one sub-directory per cache key.")
    ] = str(DEFAULT_TENSORRT_CACHE_DIR)
    fp16: Annotated[bool, setting("Build fp16 engines.")] = True
    # BERT's residual stream can overflow fp16 in the variance computation.
    layer_norm_fp32_fallback: Annotated[bool, setting("Keep LayerNorm in fp32 inside fp16 engines.")] = True
    max_workspace_bytes: Annotated[
        int, setting("Builder workspace in bytes; 0 = TensorRT's default (the device memory).", ge=0)
    ] = 0
    builder_optimization_level: Annotated[
        int, setting("TensorRT builder optimization level (3 is TensorRT's default).", ge=0, le=5)
    ] = 3
    # ONNX Runtime keeps a TensorRT context on profile 0, so one profile per
    # session is the way to get an engine tuned for each length.
    profiles: Annotated[
        Literal["per_bucket", "single"],
        setting(
            "per_bucket: one engine per length bucket, tuned for that length; single: one engine whose "
            "profile spans every bucket (less memory and build time)."
        ),
    ] = "per_bucket"


class EngineSettings(Settings, frozen=True):
    """What an engine is built with: shapes, graph optimization and each provider's settings."""

    buckets: Annotated[
        BucketEdges | None,
        setting(
            "Sequence-length bucket edges, ascending (comma-separated in flags and environment); unset = "
            "the device's default (fine-grained on CPU, TensorRT-profile-sized on GPU). Capped at the "
            "model's maximum length, which is always the last edge."
        ),
    ] = None
    max_batch_size: Annotated[
        int, setting("Most items in one engine batch; TensorRT profiles are built for it.", ge=1)
    ] = 32
    max_sequence_length: Annotated[
        PositiveInt | None,
        setting(
            "Longest input in tokens, special tokens included; unset = the model's maximum (a larger value "
            "is capped to it). Lower, it is the last bucket edge: longer inputs are truncated, refused "
            "(`truncate: false`) or, with long_text chunk, windowed to it."
        ),
    ] = None
    # ORT_ENABLE_ALL also applies fusions the exported graph may not have had.
    graph_optimization_level: Annotated[
        Literal["disable", "basic", "extended", "all"], setting("ONNX Runtime graph optimization; lower only to debug.")
    ] = "all"
    cpu: CpuSettings = msgspec.field(default_factory=CpuSettings)
    cuda: CudaSettings = msgspec.field(default_factory=CudaSettings)
    tensorrt: TensorRtSettings = msgspec.field(default_factory=TensorRtSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.buckets is not None and sorted(set(self.buckets)) != list(self.buckets):
            raise ValueError(f"buckets must be strictly ascending, got {self.buckets}")

    def longest_input(self, model_maximum: int) -> int:
        """The model's maximum input length, or `max_sequence_length` when that is lower."""
        configured = self.max_sequence_length
        return model_maximum if configured is None else min(configured, model_maximum)

    def engine_settings(self) -> EngineSettings:
        """Just the engine's part (a group's settings are engine settings and more)."""
        if type(self) is EngineSettings:
            return self
        names = EngineSettings.__struct_fields__
        return EngineSettings(**{name: getattr(self, name) for name in names})
