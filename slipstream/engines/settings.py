"""Typed settings of an engine: one place for every ONNX Runtime knob we expose.

Defaults are chosen for a MiniLM/BERT-sized classifier behind the length-bucketed
batcher; each field says why it has the default it has. README.md ("Engines") has the
full reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

# Where TensorRT engines and timing caches are kept unless configured otherwise.
DEFAULT_TENSORRT_CACHE_DIR = Path.home() / ".cache" / "slipstream" / "tensorrt"


class CpuSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Threads inside one run; 0 = the physical cores this process may use
    # (affinity and cgroup quota respected; hyper-threads share one core's
    # vector units, so counting them only adds contention).
    # 1 by default, with one run per core at once (`parallel_runs`): measured
    # on MiniLM-L6 int8 with 2 cores, two single-threaded runs of one session
    # gave 1.3x the sequences/s of one two-threaded run at batch 1 and 1.15x
    # at batch 8. A small batch parallelises poorly inside operators, and a
    # multi-threaded run stalls at every operator's barrier whenever the
    # service's own threads (HTTP, tokenizer) preempt one of its workers;
    # independent single-threaded runs just slow down a little. Raise it for
    # lower latency at idle on a large model, at the cost of throughput.
    intra_op_threads: int = 1
    # Batches that may run at once, each on its own thread through the same
    # session (one copy of the weights); 0 = physical cores // intra_op_threads
    # (at least 1).
    parallel_runs: int = 0
    # A batch padded to at least this many tokens that starts while nothing
    # else runs uses a second session with every physical core (see
    # `run_slots.py`). Long inputs set the tail latency at low load, and they
    # parallelise well inside operators (MiniLM-L6 int8, batch 1, two threads
    # against one: 1.55-1.8x faster from 128 tokens, only 1.3-1.4x up to 64):
    # measured at one client, p99 latency 87 -> 48 ms, with the same
    # throughput at 32 clients (under load runs never start alone). 0 = never;
    # also off when one run already has every core. The second session holds
    # a second copy of the weights.
    wide_from_length: int = 128
    # Intra-op workers spin briefly before sleeping. That wins a few percent
    # offline, but in the service the tokenizer and the HTTP loop share the same
    # cores, and a spinning idle pool steals their time; off by default.
    allow_spinning: bool = False
    # The arena keeps freed blocks for reuse; with a fixed set of bucket shapes
    # the same sizes recur, so after warm-up no run allocates from the OS.
    enable_memory_arena: bool = True
    # Reuse intermediate buffers within one run (memory pattern planning works
    # because bucketed shapes repeat).
    enable_memory_pattern: bool = True

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0 or self.parallel_runs < 0 or self.wide_from_length < 0:
            raise ValueError(
                "cpu.intra_op_threads, cpu.parallel_runs and cpu.wide_from_length must be >= 0 (0 = automatic/off)"
            )


class CudaSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    device_id: int = 0
    # Transformers have no convolutions; exhaustive search would only add
    # start-up time for models that do (e.g. ConvBERT). HEURISTIC is a cheap,
    # good choice for those.
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "HEURISTIC"
    # Copies on the default stream are ordered with compute, so a buffer reused
    # for the next batch is never overwritten while a kernel still reads it.
    do_copy_in_default_stream: bool = True
    # The bucket shapes repeat: allocate exactly what is asked rather than
    # doubling the arena on each growth (kNextPowerOfTwo wastes up to half).
    arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = "kSameAsRequested"
    # Bytes the CUDA arena may use; 0 = no limit.
    gpu_mem_limit: int = 0
    # TF32 matmuls change fp32 logits by ~1e-3 relative; None = off for the fp32
    # variant (so it matches the exported model) and on for fp16.
    use_tf32: bool | None = None
    # One captured CUDA graph per (batch, length) shape, replayed on later runs.
    # Removes kernel-launch overhead for small batches; needs every node on the
    # CUDA provider. Opt-in: not yet run on a GPU by this project.
    cuda_graphs: bool = False


class TensorRtSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Engines and timing caches live under here, one sub-directory per cache key.
    cache_dir: str = str(DEFAULT_TENSORRT_CACHE_DIR)
    fp16: bool = True
    # Keep LayerNorm in fp32 inside fp16 engines: BERT's residual stream can
    # overflow fp16 in the variance computation.
    layer_norm_fp32_fallback: bool = True
    # Builder workspace in bytes; 0 = TensorRT's default (the device memory).
    max_workspace_bytes: int = 0
    # TensorRT builder optimization level 0-5 (3 is TensorRT's default).
    builder_optimization_level: int = 3
    # "per_bucket": one session (one engine, one profile) per length bucket,
    # tuned for exactly that length; ONNX Runtime keeps a TensorRT context on
    # profile 0, so one profile per session is the way to get several.
    # "single": one session whose profile spans all buckets (less memory and
    # build time, kernels tuned for one length only).
    profiles: Literal["per_bucket", "single"] = "per_bucket"


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Sequence-length bucket edges (ascending). None = the device's default
    # (fine-grained on CPU, TensorRT-profile-sized on GPU), capped at the
    # model's maximum length.
    buckets: list[int] | None = None
    # Largest batch the batcher may send; TensorRT profiles are built for it.
    max_batch_size: int = 32
    # ORT_ENABLE_ALL also applies layout and contrib-op fusions the exported
    # graph may not have had; lower it only to debug.
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    cpu: CpuSettings = msgspec.field(default_factory=CpuSettings)
    cuda: CudaSettings = msgspec.field(default_factory=CudaSettings)
    tensorrt: TensorRtSettings = msgspec.field(default_factory=TensorRtSettings)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.buckets is not None:
            if not self.buckets or any(b < 1 for b in self.buckets):
                raise ValueError(f"buckets must be positive lengths, got {self.buckets}")
            if sorted(set(self.buckets)) != list(self.buckets):
                raise ValueError(f"buckets must be strictly ascending, got {self.buckets}")
