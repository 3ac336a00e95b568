"""Sequence-length bucket edges: what lengths the batcher pads batches to.

On a CPU every padded token costs as much as a real one, so the edges are
fine-grained (every 8 tokens up to 128, where most real inputs are). On a GPU
a few extra tokens are nearly free while every distinct shape costs a TensorRT
profile (an engine build) or a CUDA graph, so the edges are coarse.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from slipstream.engines.base import EngineError

ResolvedDevice = str  # "tensorrt" | "cuda" | "cpu"

# (up to this length, step) pairs; past the last pair the last step repeats.
_CPU_STEPS: tuple[tuple[int, int], ...] = ((128, 8), (256, 16), (512, 32))
_CPU_STEP_BEYOND = 64
_GPU_EDGES: tuple[int, ...] = (16, 32, 64, 128, 192, 256, 384, 512)
_GPU_STEP_BEYOND = 256


def _edges_from_steps(steps: Iterable[tuple[int, int]], step_beyond: int, max_length: int) -> list[int]:
    edges: list[int] = []
    start = 0
    for limit, step in steps:
        edges.extend(range(start + step, limit + 1, step))
        start = limit
    edges.extend(range(start + step_beyond, max_length + step_beyond, step_beyond))
    return edges


def default_buckets(device: ResolvedDevice, max_length: int) -> list[int]:
    """Default edges for a device, capped at (and always ending with) max_length."""
    if max_length < 1:
        raise EngineError(f"max_length must be >= 1, got {max_length}")
    if device == "cpu":
        edges = _edges_from_steps(_CPU_STEPS, _CPU_STEP_BEYOND, max_length)
    else:
        edges = list(_GPU_EDGES) + list(
            range(_GPU_EDGES[-1] + _GPU_STEP_BEYOND, max_length + _GPU_STEP_BEYOND, _GPU_STEP_BEYOND)
        )
    return cap_buckets(edges, max_length)


def cap_buckets(edges: Iterable[int], max_length: int) -> list[int]:
    """Drop edges beyond max_length and make max_length the last edge.

    The last edge must be the model's maximum so that every input the
    tokenizer can produce (truncated to the maximum) has a bucket.
    """
    kept = sorted({int(e) for e in edges if 0 < int(e) < max_length})
    return [*kept, max_length]


def bucket_index(buckets: npt.NDArray[np.int64] | list[int], lengths: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Index of the smallest edge >= each length (vectorised)."""
    edges = np.asarray(buckets)
    lengths_array = np.asarray(lengths)
    index = np.searchsorted(edges, lengths_array, side="left")
    if index.size and int(index.max()) >= len(edges):
        raise EngineError(f"length {int(lengths_array.max())} exceeds the largest bucket {int(edges[-1])}")
    return index


def padding_efficiency(buckets: list[int], lengths: npt.ArrayLike) -> float:
    """Real tokens / padded tokens when each length is padded to its bucket."""
    lengths_array = np.asarray(lengths, dtype=np.int64)
    if lengths_array.size == 0:
        return 1.0
    padded = np.asarray(buckets, dtype=np.int64)[bucket_index(buckets, lengths_array)]
    return float(lengths_array.sum() / padded.sum())


def warmup_shapes(buckets: list[int], largest_batches: list[int], *, fixed_shapes: bool) -> list[tuple[int, int]]:
    """(batch, length) shapes that prepare every bucket before serving.

    Every edge at batch 1. An engine that specialises per shape (GPU: TensorRT
    profiles, bound buffers, CUDA graphs) also runs each edge at the largest
    batch the batcher sends it (`largest_batches[i]` for edge i). ONNX Runtime
    on a CPU compiles nothing per shape: one run per bucket sets up its
    buffers, and full batches at every length would only lengthen start-up.
    """
    shapes = []
    for edge, largest in zip(buckets, largest_batches, strict=True):
        shapes.append((1, edge))
        if fixed_shapes and largest > 1:
            shapes.append((largest, edge))
    return shapes
