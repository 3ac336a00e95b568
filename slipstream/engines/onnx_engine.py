"""The Engine implementation: ONNX Runtime sessions behind one `run`.

Thread safety: up to `parallel_runs` calls of `run` may execute at once; more
wait. On a CPU those are concurrent runs of one session (ONNX Runtime's `Run`
is thread-safe), each with `cpu.intra_op_threads` threads, sharing one copy of
the weights; a batch of `cpu.wide_from_length` tokens or more that starts
while nothing else runs uses a second session with every core instead (see
`run_slots.py`). On a GPU
it is one at a time: the device buffers are reused per shape. Several engines
(e.g. one per consumer group) may run concurrently; on a CPU they then share
the cores, so give each fewer `cpu.parallel_runs`.

Batch invariance: an item's logits never depend on what else is in its batch.
A variant whose kernels are row-independent (fp32, fp16) runs batches as they
come; one that is not (dynamic int8: one activation scale per run) runs each
item alone, cut to its own length (`per_item.py`), and tells the batcher to
send one item per batch so that the items of a request still spread over the
parallel runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnxruntime as ort

from slipstream.engines.base import EngineDescription, EngineError, Float32Array, Int64Array
from slipstream.engines.buckets import bucket_index
from slipstream.engines.per_item import run_each_item_alone
from slipstream.engines.run_slots import RunSlots


class Runner(Protocol):
    """One ONNX Runtime session and how inputs reach it."""

    def run(self, feeds: dict[str, Int64Array]) -> Float32Array: ...

    @property
    def warmup_runs(self) -> int: ...


class HostRunner:
    """CPU: numpy in, numpy out; nothing to gain from binding host memory."""

    warmup_runs = 1

    def __init__(self, session: ort.InferenceSession, output_name: str) -> None:
        self._session = session
        self._outputs = [output_name]

    def run(self, feeds: dict[str, Int64Array]) -> Float32Array:
        logits: Float32Array = self._session.run(self._outputs, feeds)[0]
        return logits


@dataclass(frozen=True)
class EngineSpec:
    """Everything about a loaded engine that is not a session."""

    variant: str
    model_file: str
    device: str
    providers: list[str]
    options: dict[str, str]
    buckets: list[int]
    max_batch_size: int
    input_names: list[str]
    num_labels: int
    pad_token_id: int
    parallel_runs: int = 1  # `run` calls that may execute at once
    # GPU engines only run prepared shapes (TensorRT profiles, bound buffers,
    # CUDA graphs), so `run` pads a length between edges up to its bucket; on a
    # CPU any shape runs and padding would be pure waste.
    fixed_shapes: bool = True
    # CPU: batches at least this long run alone on the wide runner (every
    # core); 0 = no wide runner.
    wide_from_length: int = 0
    # Each item runs alone, unpadded (the variant's manifest says it must).
    per_item: bool = False


class OnnxEngine:
    def __init__(
        self,
        spec: EngineSpec,
        runners: Sequence[Runner],
        runner_of_bucket: Sequence[int],
        wide_runner: Runner | None = None,
    ) -> None:
        if len(runner_of_bucket) != len(spec.buckets):
            raise EngineError("every bucket needs a runner")
        if spec.wide_from_length and wide_runner is None:
            raise EngineError("wide_from_length needs a wide runner")
        self._spec = spec
        self._runners = list(runners)
        self._runner_of_bucket = list(runner_of_bucket)
        self._wide_runner = wide_runner
        self._edges = np.asarray(spec.buckets, dtype=np.int64)
        self._needs_token_types = "token_type_ids" in spec.input_names
        self._run_slots = RunSlots(spec.parallel_runs)

    @property
    def input_names(self) -> list[str]:
        return list(self._spec.input_names)

    @property
    def num_labels(self) -> int:
        return self._spec.num_labels

    @property
    def buckets(self) -> list[int]:
        return list(self._spec.buckets)

    @property
    def max_batch_size(self) -> int:
        """Items the batcher should put in one batch: 1 for a per-item engine
        (whose `run` still accepts up to the configured maximum)."""
        return 1 if self._spec.per_item else self._spec.max_batch_size

    @property
    def parallel_runs(self) -> int:
        return self._spec.parallel_runs

    @property
    def device(self) -> str:
        return self._spec.device

    @property
    def variant(self) -> str:
        return self._spec.variant

    def run(
        self,
        input_ids: Int64Array,
        attention_mask: Int64Array,
        token_type_ids: Int64Array | None = None,
    ) -> Float32Array:
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.int64)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise EngineError(
                f"input_ids and attention_mask must be [batch, length] of one shape, got {ids.shape} and {mask.shape}"
            )
        batch, length = ids.shape
        if not 1 <= batch <= self._spec.max_batch_size:
            raise EngineError(f"batch of {batch} is outside 1..max_batch_size={self._spec.max_batch_size}")
        if length < 1:
            raise EngineError("inputs have length 0")
        bucket = int(bucket_index(self._edges, length))
        types: Int64Array | None = None
        if self._needs_token_types:
            types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids, dtype=np.int64)
            if types.shape != ids.shape:
                raise EngineError(f"token_type_ids has shape {types.shape}, expected {ids.shape}")
        edge = int(self._edges[bucket])
        if edge != length and self._spec.fixed_shapes:
            # A length between edges is padded up to its bucket so that only
            # prepared shapes (TensorRT profiles, bound buffers) ever run.
            # The mask is 0 there, so the real tokens' logits do not change.
            extra = ((0, 0), (0, edge - length))
            ids = np.pad(ids, extra, constant_values=self._spec.pad_token_id)
            mask = np.pad(mask, extra)
            if types is not None:
                types = np.pad(types, extra)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            feeds["token_type_ids"] = types
        wants_wide = self._wide_runner is not None and ids.shape[1] >= self._spec.wide_from_length
        try:
            with self._run_slots.claim(wants_wide) as wide:
                runner = self._runners[self._runner_of_bucket[bucket]]
                if wide and self._wide_runner is not None:
                    runner = self._wide_runner
                logits = run_each_item_alone(runner.run, feeds) if self._spec.per_item else runner.run(feeds)
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(f"inference failed on a [{batch}, {edge}] batch: {exc}") from exc
        return np.ascontiguousarray(logits, dtype=np.float32)

    def warmup(self, shapes: list[tuple[int, int]]) -> None:
        for batch, length in shapes:
            bucket = int(bucket_index(self._edges, length))
            runs = self._runners[self._runner_of_bucket[bucket]].warmup_runs
            # The pad id is the one token id every vocabulary has; the mask is
            # all ones so that warm-up takes the same path as full real inputs.
            ids = np.full((batch, length), self._spec.pad_token_id, dtype=np.int64)
            mask = np.ones_like(ids)
            for _ in range(runs):
                self.run(ids, mask)

    def describe(self) -> EngineDescription:
        spec = self._spec
        return EngineDescription(
            variant=spec.variant,
            model_file=spec.model_file,
            device=spec.device,
            providers=list(spec.providers),
            options=dict(spec.options),
            buckets=list(spec.buckets),
            max_batch_size=spec.max_batch_size,
        )
