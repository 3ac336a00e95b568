"""The length-bucketed dynamic batcher: requests in, engine batches out.

No HTTP here: any front end (the Litestar app, tests, a benchmark) calls
`Batcher.infer(encoded_items)` on an asyncio loop and gets one logits row per
item, in order.

How work flows:
- `submit` (on the event loop) checks backpressure (queued tokens), puts each
  item into the queue of its length bucket and wakes an idle engine worker.
- Engine workers (one thread per run the engine allows at once,
  `engine.parallel_runs`: one on a GPU, one per core on a CPU) each take a
  batch (see `scheduling.py` for the rule) the moment they are free, pad it
  with numpy and run it, then take the next one without waiting for the event
  loop. Meanwhile the loop keeps accepting and tokenizing the next requests.
- Results go back to the loop, which scatters them into each request's output
  array; a request's future completes when its last item has run.
- An item whose request was cancelled (client gone) or whose deadline passed
  is dropped before it reaches the engine, and counted.
- An engine exception fails the requests in that batch only.
- A batch still running after `batch_timeout_s` (a hung engine) is given up
  by a watchdog on the loop: its requests fail with 504, and its worker is
  left to finish (or not) on its own while a new worker takes its place, so
  the group keeps serving. A given-up worker that does come back rejoins if a
  place is free, and exits otherwise. At most `MAX_STUCK_WORKERS` may be stuck
  at once; past that no replacement starts, and once no worker is left the
  group refuses work (503) instead of queueing it for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from slipstream.batching.errors import (
    DeadlineExceeded,
    EngineFailure,
    EngineTimeout,
    PayloadTooLarge,
    QueueFull,
    Unavailable,
)
from slipstream.batching.metrics import MetricsSink, NullMetrics
from slipstream.batching.scheduling import BucketQueues
from slipstream.batching.tokenization import EncodedItems
from slipstream.engines.base import Engine

Logits = npt.NDArray[np.float32]
log = logging.getLogger("slipstream.batching")

# Given-up workers whose engine run has not returned, at most, per batcher: each is a
# thread that cannot be killed, so a wedged engine must not make them pile up.
MAX_STUCK_WORKERS = 8


class _Worker:
    """One engine worker thread; `abandoned` once the watchdog gave up its batch."""

    __slots__ = ("abandoned", "thread")

    def __init__(self) -> None:
        self.abandoned = False
        self.thread: threading.Thread | None = None


class PendingRequest:
    """One submitted request: its items' results fill `logits` row by row."""

    __slots__ = (
        "deadline",
        "deadline_timer",
        "encoded",
        "enqueued_at",
        "future",
        "inference_s",
        "last_batch",
        "logits",
        "queue_wait_s",
        "remaining",
        "started",
    )

    def __init__(
        self,
        future: asyncio.Future[Logits],
        encoded: EncodedItems,
        num_labels: int,
        enqueued_at: float,
        deadline: float | None,
    ) -> None:
        self.future = future
        self.encoded = encoded
        self.logits: Logits = np.empty((len(encoded), num_labels), dtype=np.float32)
        self.remaining = len(encoded)
        self.deadline = deadline
        self.started = False
        self.enqueued_at = enqueued_at
        self.queue_wait_s = 0.0  # until its first item started running
        self.inference_s = 0.0  # engine time of the batches it was part of
        self.last_batch = -1
        self.deadline_timer: asyncio.TimerHandle | None = None


class QueuedItem:
    __slots__ = ("enqueued_at", "index", "length", "request")

    def __init__(self, request: PendingRequest, index: int, length: int, enqueued_at: float) -> None:
        self.request = request
        self.index = index
        self.length = length
        self.enqueued_at = enqueued_at


def _is_dead(item: QueuedItem) -> bool:
    # Done before it ran means cancelled, failed by another batch, or timed out.
    return item.request.future.done()


def pad_batch(
    items: list[QueuedItem], length: int, pad_token_id: int, with_type_ids: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
    """(input_ids, attention_mask, token_type_ids) of shape [len(items), length]."""
    lengths = np.fromiter((item.length for item in items), dtype=np.int64, count=len(items))
    # Where each real token goes: row i, columns [0, lengths[i]).
    mask = np.arange(length, dtype=np.int64)[None, :] < lengths[:, None]
    # One slice per item (a batch holds at most max_batch_size), one scatter per input.
    id_pieces, type_pieces = [], []
    for item in items:
        encoded = item.request.encoded
        start, stop = encoded.offsets[item.index], encoded.offsets[item.index + 1]
        id_pieces.append(encoded.ids[start:stop])
        if with_type_ids and encoded.type_ids is not None:
            type_pieces.append(encoded.type_ids[start:stop])
    input_ids = np.full((len(items), length), pad_token_id, dtype=np.int64)
    input_ids[mask] = np.concatenate(id_pieces)
    token_type_ids = None
    if type_pieces:
        token_type_ids = np.zeros((len(items), length), dtype=np.int64)
        token_type_ids[mask] = np.concatenate(type_pieces)
    return input_ids, mask.astype(np.int64), token_type_ids


class Batcher:
    """Batches one engine's work. Create, `await start()`, `infer(...)`, `await close()`."""

    def __init__(
        self,
        engine: Engine,
        *,
        edges: list[int],
        max_batch_size: int,
        max_batch_tokens: int | None,
        batch_duration_millis: float,
        max_queue_tokens: int,
        pad_token_id: int,
        pad_to_longest: bool = False,
        metrics: MetricsSink | None = None,
        clock: Callable[[], float] = time.perf_counter,
        name: str = "engine",
        batch_timeout_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.max_queue_tokens = max_queue_tokens
        self.pad_token_id = pad_token_id
        # False: pad to the bucket edge (fixed shapes: what GPU engines are warmed for).
        # True: pad to the batch's longest item (a baseline; never past the edge).
        self.pad_to_longest = pad_to_longest
        self.with_type_ids = "token_type_ids" in engine.input_names
        self.num_labels = engine.num_labels
        self.parallel_runs = max(1, engine.parallel_runs)
        self.queues: BucketQueues[QueuedItem] = BucketQueues(
            edges,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
            max_wait_s=batch_duration_millis / 1000.0,
        )
        self.metrics: MetricsSink = metrics or NullMetrics()
        self.clock = clock
        # Plain counters (tests read them; Prometheus gets the same through `metrics`).
        self.items_computed = 0
        self.dropped: Counter[str] = Counter()
        # The queues are shared by the loop (which pushes) and the engine workers
        # (which take batches), so they are only touched under this lock.
        self._queue_lock = threading.Condition()
        self._in_flight: dict[int, list[QueuedItem]] = {}  # batch number -> items, until the loop has them
        self._batch_numbers = itertools.count(1)
        self._workers: list[_Worker] = []  # every worker started, given-up ones included
        # The watchdog's view: when each running batch started, and on which worker.
        self.batch_timeout_s = batch_timeout_s
        self._running: dict[int, tuple[float, _Worker]] = {}
        self._active_workers = 0  # workers not given up
        self._stuck: set[_Worker] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self.batches_timed_out = 0
        self._stopping = False
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tokens_per_s = 0.0  # moving average, for Retry-After

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Start one engine worker per run the engine allows at once."""
        if self._workers:
            return
        self._loop = asyncio.get_running_loop()
        for _ in range(self.parallel_runs):
            self._start_worker()
        if self.batch_timeout_s is not None:
            self._watchdog = self._loop.call_later(self._watch_period_s(), self._watch)

    def _start_worker(self) -> None:
        worker = _Worker()
        with self._queue_lock:
            self._active_workers += 1
        worker.thread = threading.Thread(
            target=self._work, args=(worker,), name=f"engine-{self.name}-{len(self._workers)}", daemon=True
        )
        self._workers.append(worker)
        worker.thread.start()

    async def warmup(self, shapes: list[tuple[int, int]]) -> None:
        """Run the engine's warm-up in a thread (the loop stays responsive)."""
        await asyncio.to_thread(self.engine.warmup, shapes)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def workers_alive(self) -> bool:
        """Every engine worker the batcher counts on runs, and there is one (False before `start`, after
        `close`, and once every worker is stuck): a health signal. Workers the watchdog gave up do not
        count: one that comes back to no free place exits, as it should."""
        with self._queue_lock:
            counted = [worker.thread for worker in self._workers if not worker.abandoned]
            active = self._active_workers
        return not self._stopping and active > 0 and all(thread is not None and thread.is_alive() for thread in counted)

    def stop_admitting(self) -> None:
        self._closing = True

    async def close(self, timeout_s: float) -> None:
        """Stop admitting, let queued work finish within `timeout_s`, fail the rest with 503."""
        self._closing = True
        try:
            await asyncio.wait_for(self._drained(), timeout_s)
        except TimeoutError:
            with self._queue_lock:
                leftovers = self.queues.drain()
                running = [item for items in self._in_flight.values() for item in items]
            self._fail_items(leftovers, Unavailable("the service shut down before this ran"))
            self._fail_items(running, Unavailable("the service shut down while this ran"))
            self.metrics.dropped("shutdown", len(leftovers))
            self.dropped["shutdown"] += len(leftovers)
        with self._queue_lock:
            self._stopping = True
            self._queue_lock.notify_all()
        if self._watchdog is not None:
            self._watchdog.cancel()

    async def _drained(self) -> None:
        while self.queues.items or self._in_flight:
            await asyncio.sleep(0.005)

    # -- admission (on the event loop) -------------------------------------

    def retry_after_s(self) -> int:
        if self._tokens_per_s <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self.queues.tokens / self._tokens_per_s))))

    def submit(self, encoded: EncodedItems, *, timeout_s: float | None = None) -> PendingRequest:
        """Queue a request's items; raise QueueFull, PayloadTooLarge or Unavailable at once."""
        if self._closing:
            self.metrics.rejected("shutting_down")
            raise Unavailable("the service is shutting down")
        if self._workers and self._active_workers == 0:
            self.metrics.rejected("engine_hung")
            raise Unavailable(
                f"the engine is not responding: {len(self._stuck)} batches ran past batch_timeout_s="
                f"{self.batch_timeout_s:g} s and none has returned"
            )
        tokens = encoded.total_tokens
        if tokens > self.max_queue_tokens:
            self.metrics.rejected("too_large")
            raise PayloadTooLarge(
                f"the request has {tokens} tokens; this consumer group queues at most {self.max_queue_tokens}"
            )
        if self.queues.tokens + tokens > self.max_queue_tokens:
            self.metrics.rejected("queue_full")
            retry = self.retry_after_s()
            raise QueueFull(
                f"the queue is full ({self.queues.tokens} tokens queued); retry in {retry} s",
                retry_after_s=retry,
            )
        loop = asyncio.get_running_loop()
        now = self.clock()
        deadline = None if timeout_s is None else now + timeout_s
        request = PendingRequest(loop.create_future(), encoded, self.num_labels, now, deadline)
        if timeout_s is not None:
            request.deadline_timer = loop.call_later(timeout_s, self._expire, request)
        buckets = self.queues.buckets_of(encoded.lengths).tolist()
        lengths = encoded.lengths.tolist()
        with self._queue_lock:
            for index, (bucket, length) in enumerate(zip(buckets, lengths, strict=True)):
                self.queues.push(bucket, QueuedItem(request, index, length, now))
            # Wake as many idle workers as there may be batches for.
            self._queue_lock.notify(min(len(lengths), self.parallel_runs))
            items, queued_tokens = self.queues.items, self.queues.tokens
        self.metrics.queue_depth(items, queued_tokens)
        return request

    async def infer(self, encoded: EncodedItems, *, timeout_s: float | None = None) -> Logits:
        """Logits [len(encoded), num_labels] for the items, in order."""
        request = self.submit(encoded, timeout_s=timeout_s)
        return await request.future

    def _expire(self, request: PendingRequest) -> None:
        # A deadline only fails a request none of whose work has started.
        if not request.started and not request.future.done():
            request.future.set_exception(DeadlineExceeded("the deadline passed before the work ran"))

    # -- engine workers (one thread per parallel run) ----------------------
    #
    # Each worker takes its next batch itself the moment its last one is done,
    # so the engine never waits for the event loop to get round to it; the loop
    # only admits requests and hands results back.

    def _work(self, worker: _Worker) -> None:
        while True:
            try:
                if not self._take_and_run(worker):
                    return
            except Exception:  # a bug here must not silently cost the engine a worker
                log.exception("engine worker %s: unexpected error; it keeps serving", threading.current_thread().name)
            if worker.abandoned and not self._rejoin(worker):
                return

    def _rejoin(self, worker: _Worker) -> bool:
        """A given-up worker came back: it serves again if a place is free, else it exits."""
        with self._queue_lock:
            self._stuck.discard(worker)
            if self._active_workers < self.parallel_runs and not self._stopping:
                worker.abandoned = False
                self._active_workers += 1
                return True
        return False

    def _take_and_run(self, worker: _Worker) -> bool:
        """Wait for work, take one batch and run it; False once stopping."""
        while True:
            with self._queue_lock:
                while not self.queues.items and not self._stopping:
                    self._queue_lock.wait()
                if self._stopping:
                    return False
                selection = self.queues.pop_batch(self.clock(), _is_dead)
                if selection is None:
                    continue
                bucket, items, dropped = selection
                batch_number = next(self._batch_numbers)
                if items:
                    self._in_flight[batch_number] = items
                    self._running[batch_number] = (self.clock(), worker)
                depth = (self.queues.items, self.queues.tokens)
            self.metrics.queue_depth(*depth)
            if dropped:
                self._to_loop(self._count_drops, dropped)
            if items:
                try:
                    self._run_batch(batch_number, self.queues.edges[bucket], items, worker)
                except Exception as exc:  # not the engine's failure (that is handled inside): still answer
                    failure = EngineFailure(f"internal error while running this request's batch: {exc}")
                    self._to_loop(self._complete, batch_number, items, None, failure, 0.0)
                    raise
                finally:
                    with self._queue_lock:
                        self._running.pop(batch_number, None)
                return True

    def _to_loop(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _run_batch(self, batch_number: int, edge: int, items: list[QueuedItem], worker: _Worker) -> None:
        """In a worker thread: mark started, pad, run, hand the outcome to the loop."""
        started_at = self.clock()
        timers = []
        for item in items:
            request = item.request
            if not request.started:
                request.started = True  # from now on its deadline no longer applies
                request.queue_wait_s = started_at - request.enqueued_at
                self.metrics.queue_waited(request.queue_wait_s)
                if request.deadline_timer is not None:
                    timers.append(request.deadline_timer)
        if timers:
            self._to_loop(_cancel_timers, timers)
        real_tokens = sum(item.length for item in items)
        padded_length = max(item.length for item in items) if self.pad_to_longest else edge
        try:
            logits = self._execute(items, padded_length)
            if worker.abandoned:  # the watchdog already answered this batch's requests
                log.warning("engine %s: a batch given up after %.1f s returned", self.name, self.clock() - started_at)
                return
        except Exception as exc:  # the engine failed: only this batch's requests see it
            if worker.abandoned:
                return
            log.warning("engine %s failed on a [%d, %d] batch: %s", self.name, len(items), padded_length, exc)
            self.metrics.engine_failed()
            failure = EngineFailure(f"the engine failed on the batch this request was in: {exc}")
            self._to_loop(self._complete, batch_number, items, None, failure, 0.0)
            return
        seconds = self.clock() - started_at
        self.metrics.batch_ran(edge, len(items), real_tokens, padded_length, seconds)
        if seconds > 0:
            # Runs overlap, so the engine's rate is about parallel_runs batches' worth.
            rate = real_tokens * self.parallel_runs / seconds
            self._tokens_per_s = rate if self._tokens_per_s == 0 else 0.8 * self._tokens_per_s + 0.2 * rate
        self._to_loop(self._complete, batch_number, items, logits, None, seconds)

    def _execute(self, items: list[QueuedItem], length: int) -> Logits:
        input_ids, attention_mask, token_type_ids = pad_batch(items, length, self.pad_token_id, self.with_type_ids)
        logits = self.engine.run(input_ids, attention_mask, token_type_ids)
        if logits.shape != (len(items), self.num_labels):
            raise RuntimeError(
                f"engine returned logits of shape {logits.shape}, expected {(len(items), self.num_labels)}"
            )
        return logits

    # -- the watchdog (on the event loop) --------------------------------------

    def _watch_period_s(self) -> float:
        # An overdue batch is noticed within a quarter of the timeout (and within a second).
        assert self.batch_timeout_s is not None
        return min(1.0, self.batch_timeout_s / 4)

    def _watch(self) -> None:
        assert self.batch_timeout_s is not None and self._loop is not None
        now = self.clock()
        overdue: list[tuple[list[QueuedItem], _Worker]] = []
        replace = 0
        with self._queue_lock:
            for batch_number, (started_at, worker) in list(self._running.items()):
                if now - started_at <= self.batch_timeout_s:
                    continue
                del self._running[batch_number]
                overdue.append((self._in_flight.pop(batch_number, []), worker))
                worker.abandoned = True
                self._active_workers -= 1
                self._stuck.add(worker)
                if len(self._stuck) <= MAX_STUCK_WORKERS and not self._stopping:
                    replace += 1
        for items, _ in overdue:
            self.batches_timed_out += 1
            self.metrics.batch_timed_out()
            log.error(
                "engine %s: a batch of %d items ran past batch_timeout_s=%g s; its requests get 504 (%d workers "
                "stuck, %s)",
                self.name,
                len(items),
                self.batch_timeout_s,
                len(self._stuck),
                "replaced" if replace else f"not replaced: at most {MAX_STUCK_WORKERS} may be stuck",
            )
            self._fail_items(
                items,
                EngineTimeout(
                    f"the engine did not finish the batch this request was in within batch_timeout_s="
                    f"{self.batch_timeout_s:g} s; the batch was given up"
                ),
            )
        for _ in range(replace):
            self._start_worker()
        if not self._stopping:
            self._watchdog = self._loop.call_later(self._watch_period_s(), self._watch)

    # -- results (on the event loop) -----------------------------------------

    def _complete(
        self,
        batch_number: int,
        items: list[QueuedItem],
        logits: Logits | None,
        failure: Exception | None,
        seconds: float,
    ) -> None:
        with self._queue_lock:
            self._in_flight.pop(batch_number, None)
        if logits is None:
            self._fail_items(items, failure or EngineFailure("the engine failed on this batch"))
            return
        self.items_computed += len(items)
        self._scatter(items, logits, batch_number, seconds)

    def _count_drops(self, dropped: list[QueuedItem]) -> None:
        for item in dropped:
            exc = item.request.future.exception() if not item.request.future.cancelled() else None
            reason = "cancelled" if exc is None else ("deadline" if isinstance(exc, DeadlineExceeded) else "failed")
            self.dropped[reason] += 1
            self.metrics.dropped(reason, 1)

    @staticmethod
    def _scatter(items: list[QueuedItem], logits: Logits, batch_number: int, seconds: float) -> None:
        for row, item in enumerate(items):
            request = item.request
            if request.future.done():  # cancelled while its batch ran
                continue
            request.logits[item.index] = logits[row]
            if request.last_batch != batch_number:
                request.last_batch = batch_number
                request.inference_s += seconds
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.logits)

    @staticmethod
    def _fail_items(items: list[QueuedItem], error: Exception) -> None:
        for item in items:
            if not item.request.future.done():
                item.request.future.set_exception(error)


def _cancel_timers(timers: list[asyncio.TimerHandle]) -> None:
    for timer in timers:
        timer.cancel()
