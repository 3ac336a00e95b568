"""A deterministic in-process engine for batcher tests (no ONNX Runtime)."""

from __future__ import annotations

import threading
import time

import numpy as np

from slipstream.engines.base import EngineDescription


class RecordingEngine:
    """Logits that depend only on each row's real tokens, so padding or swapped rows show.

    Row logits: [sum of ids * (1 + token_type), number of real tokens, first id] with three
    labels; with one label, that sum folded into [-5, 5) so a sigmoid does not saturate.
    Records every batch's shape and which ids it saw; `delay_s` simulates work;
    `fail_on_id` makes a batch containing that token id raise; `hang_on_id` makes it hang
    (a wedged engine) until `release()`.
    """

    def __init__(
        self,
        buckets: list[int],
        max_batch_size: int = 8,
        delay_s: float = 0.0,
        fail_on_id: int | None = None,
        hang_on_id: int | None = None,
        with_type_ids: bool = True,
        num_labels: int = 3,
        parallel_runs: int = 1,
    ) -> None:
        assert num_labels in (1, 3)
        self._num_labels = num_labels
        self._buckets = buckets
        self._max_batch_size = max_batch_size
        self._parallel_runs = parallel_runs
        self.delay_s = delay_s
        self.fail_on_id = fail_on_id
        self.hang_on_id = hang_on_id
        self._released = threading.Event()
        self.hung_runs = 0
        self._inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_type_ids else [])
        self.batches: list[tuple[int, int]] = []  # (batch, length) per run
        self.concurrent_runs = 0
        self.max_concurrent_runs = 0
        self._lock = threading.Lock()

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def num_labels(self) -> int:
        return self._num_labels

    @property
    def buckets(self) -> list[int]:
        return self._buckets

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def parallel_runs(self) -> int:
        return self._parallel_runs

    @staticmethod
    def reference(ids: np.ndarray, type_ids: np.ndarray | None = None, num_labels: int = 3) -> np.ndarray:
        """The logits of one unpadded input."""
        weights = 1 + (type_ids if type_ids is not None else 0)
        total = float((ids * weights).sum())
        if num_labels == 1:
            return np.array([(total % 997) / 100 - 5], dtype=np.float32)
        return np.array([total, float(len(ids)), float(ids[0])], dtype=np.float32)

    def run(self, input_ids, attention_mask, token_type_ids=None):
        with self._lock:
            self.concurrent_runs += 1
            self.max_concurrent_runs = max(self.max_concurrent_runs, self.concurrent_runs)
        try:
            self.batches.append(tuple(input_ids.shape))
            if self.fail_on_id is not None and (input_ids == self.fail_on_id).any():
                raise RuntimeError("injected engine failure")
            if self.hang_on_id is not None and (input_ids == self.hang_on_id).any():
                with self._lock:
                    self.hung_runs += 1
                self._released.wait()
            if self.delay_s:
                time.sleep(self.delay_s)
            weights = 1 + (token_type_ids if token_type_ids is not None else 0)
            totals = (input_ids * attention_mask * weights).sum(1)
            if self._num_labels == 1:
                return ((totals % 997) / 100 - 5).astype(np.float32)[:, None]
            return np.stack([totals, attention_mask.sum(1), input_ids[:, 0]], axis=1).astype(np.float32)
        finally:
            with self._lock:
                self.concurrent_runs -= 1

    def release(self) -> None:
        """Let every hung run return."""
        self._released.set()

    def warmup(self, shapes):
        for batch, length in shapes:
            self.run(np.ones((batch, length), np.int64), np.ones((batch, length), np.int64))

    def describe(self) -> EngineDescription:
        return EngineDescription(
            variant="fake",
            model_file="-",
            device="cpu",
            providers=["Fake"],
            options={},
            buckets=self._buckets,
            max_batch_size=self._max_batch_size,
        )
