"""Which queued items run next: per-length-bucket queues and the batch choice.

Pure bookkeeping with no I/O, threads or clocks of its own (time is passed
in), so the scheduling rules can be property-tested directly.

The rule, applied whenever the engine is free (an idle engine never sleeps
waiting for a batch to fill; under load, batches fill while it runs):

1. If some buckets' oldest items have waited `max_wait_s` or more, serve the
   overdue bucket served least recently (ties: the oldest item). Overdue
   buckets take turns, so none starves behind a flooded one: once due, an
   item waits at most one batch per other overdue bucket (and the batch
   running when it became due), FIFO within its bucket.
2. Otherwise serve the bucket that makes the biggest batch (ties: the oldest).

A batch holds at most `capacity(bucket)` items: `max_batch_size`, and no more
than `max_batch_tokens` padded tokens (at least one item, whatever its length).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from slipstream.engines.buckets import bucket_index


class Queued(Protocol):
    @property
    def length(self) -> int: ...

    @property
    def enqueued_at(self) -> float: ...


ItemT = TypeVar("ItemT", bound=Queued)


class BucketQueues(Generic[ItemT]):
    def __init__(
        self,
        edges: list[int],
        *,
        max_batch_size: int,
        max_batch_tokens: int | None,
        max_wait_s: float,
    ) -> None:
        # Validated where they entered (EngineSettings) and capped by the engine.
        self.edges = list(edges)
        self._edges_array = np.asarray(edges, dtype=np.int64)
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self._queues: list[deque[ItemT]] = [deque() for _ in edges]
        self._capacities = [self._capacity(edge) for edge in edges]
        self._last_served = [-math.inf for _ in edges]  # `now` of each bucket's last batch
        self.items = 0
        self.tokens = 0  # real (unpadded) tokens queued

    def _capacity(self, edge: int) -> int:
        capacity = self.max_batch_size
        if self.max_batch_tokens is not None:
            capacity = min(capacity, max(1, self.max_batch_tokens // edge))
        return capacity

    def capacity(self, bucket: int) -> int:
        return self._capacities[bucket]

    def buckets_of(self, lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """Index of the smallest edge >= each length."""
        return bucket_index(self._edges_array, lengths)

    def push(self, bucket: int, item: ItemT) -> None:
        self._queues[bucket].append(item)
        self.items += 1
        self.tokens += item.length

    def choose_bucket(self, now: float) -> int | None:
        """The bucket to serve next, by the rule in the module docstring."""
        best: int | None = None
        best_key: tuple[float, ...] = ()
        for bucket, queue in enumerate(self._queues):
            if not queue:
                continue
            head = queue[0].enqueued_at
            overdue = now - head >= self.max_wait_s
            size = min(len(queue), self._capacities[bucket])
            # Overdue buckets first (oldest first), then the biggest batch, then the oldest.
            key = (1.0, -self._last_served[bucket], -head) if overdue else (0.0, float(size), -head)
            if best is None or key > best_key:
                best, best_key = bucket, key
        return best

    def pop_batch(self, now: float, is_dead: Callable[[ItemT], bool]) -> tuple[int, list[ItemT], list[ItemT]] | None:
        """(bucket, live items to run, dead items dropped), or None when nothing is queued.

        Dead items (cancelled, past their deadline) met at the head of the
        chosen queue are removed without taking a place in the batch.
        """
        while self.items:
            bucket = self.choose_bucket(now)
            assert bucket is not None
            queue = self._queues[bucket]
            capacity = self._capacities[bucket]
            self._last_served[bucket] = now
            batch: list[ItemT] = []
            dropped: list[ItemT] = []
            while queue and len(batch) < capacity:
                item = queue.popleft()
                self.items -= 1
                self.tokens -= item.length
                (dropped if is_dead(item) else batch).append(item)
            if batch or dropped:
                return bucket, batch, dropped
        return None

    def drain(self) -> list[ItemT]:
        """Remove and return everything queued (shutdown)."""
        items = [item for queue in self._queues for item in queue]
        for queue in self._queues:
            queue.clear()
        self.items = 0
        self.tokens = 0
        return items
