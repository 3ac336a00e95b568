"""The batcher with a recording engine, in process: scheduling invariants and failure handling."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipstream.batching import batcher as batcher_module
from slipstream.batching.batcher import Batcher
from slipstream.batching.errors import (
    DeadlineExceeded,
    EngineFailure,
    EngineTimeout,
    PayloadTooLarge,
    QueueFull,
    Unavailable,
)
from slipstream.batching.scheduling import BucketQueues
from slipstream.batching.tokenization import EncodedItems, TextInput
from tests.batching.fakes import RecordingEngine

EDGES = [4, 8, 16, 32]
pytestmark = pytest.mark.timeout(120)


def encoded(sequences: Sequence[Sequence[int]]) -> EncodedItems:
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
    type_ids = (ids % 2).astype(np.int64)  # arbitrary, but it must follow each token
    return EncodedItems(ids=ids, type_ids=type_ids, lengths=lengths, offsets=offsets)


def reference(item: EncodedItems, index: int) -> np.ndarray:
    start, stop = item.offsets[index], item.offsets[index + 1]
    assert item.type_ids is not None
    return RecordingEngine.reference(item.ids[start:stop], item.type_ids[start:stop])


def make_batcher(engine: RecordingEngine, **overrides) -> Batcher:
    options: dict[str, Any] = dict(
        edges=EDGES,
        max_batch_size=engine.max_batch_size,
        max_batch_tokens=None,
        batch_duration_millis=5.0,
        max_queue_tokens=100_000,
        pad_token_id=0,
    )
    options.update(overrides)
    return Batcher(engine, **options)


sequences = st.lists(st.integers(1, 30_000), min_size=1, max_size=32)
requests = st.lists(st.lists(sequences, min_size=1, max_size=4), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=requests,
    max_batch_size=st.integers(1, 8),
    max_batch_tokens=st.sampled_from([None, 32, 100]),
    parallel_runs=st.integers(1, 3),
)
def test_every_item_runs_exactly_once_in_a_batch_of_its_bucket_length(
    requests, max_batch_size, max_batch_tokens, parallel_runs
):
    engine = RecordingEngine(EDGES, max_batch_size=max_batch_size, parallel_runs=parallel_runs)

    async def scenario() -> list[np.ndarray]:
        batcher = make_batcher(engine, max_batch_tokens=max_batch_tokens)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.infer(encoded(r)) for r in requests))
        finally:
            await batcher.close(1.0)

    results = asyncio.run(scenario())
    total_items = sum(len(r) for r in requests)
    # Exactly once: the engine saw as many rows as were submitted, and each came back right.
    assert sum(batch for batch, _ in engine.batches) == total_items
    for request, logits in zip(requests, results, strict=True):
        item = encoded(request)
        for index in range(len(request)):
            np.testing.assert_array_equal(logits[index], reference(item, index))
    for batch, length in engine.batches:
        assert length in EDGES
        assert batch <= max_batch_size
        if max_batch_tokens is not None:
            assert batch == 1 or batch * length <= max_batch_tokens
    assert engine.max_concurrent_runs <= parallel_runs


@pytest.mark.parametrize("parallel_runs", [1, 2])
def test_the_engine_runs_as_many_batches_at_once_as_it_allows_and_no_more(parallel_runs: int) -> None:
    engine = RecordingEngine(EDGES, max_batch_size=1, delay_s=0.02, parallel_runs=parallel_runs)

    async def scenario() -> list[np.ndarray]:
        batcher = make_batcher(engine)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.infer(encoded([[n + 1] * 3])) for n in range(8)))
        finally:
            await batcher.close(1.0)

    results = asyncio.run(scenario())
    for n, logits in enumerate(results):
        np.testing.assert_array_equal(logits[0], reference(encoded([[n + 1] * 3]), 0))
    assert len(engine.batches) == 8
    assert engine.max_concurrent_runs == parallel_runs


class _Item:
    def __init__(self, length: int, enqueued_at: float) -> None:
        self.length, self.enqueued_at = length, enqueued_at


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.lists(
        st.lists(st.tuples(st.floats(0, 1), st.sampled_from(range(len(EDGES)))), max_size=20),
        min_size=1,
        max_size=6,
    ),
    max_wait=st.floats(0.001, 0.5),
)
def test_overdue_buckets_take_turns_and_otherwise_the_biggest_batch_goes(rounds, max_wait):
    queues: BucketQueues[_Item] = BucketQueues(EDGES, max_batch_size=4, max_batch_tokens=None, max_wait_s=max_wait)
    last_served = {bucket: -1.0 for bucket in range(len(EDGES))}
    now = 0.0
    for arrivals in rounds:
        for at, bucket in sorted(arrivals):
            queues.push(bucket, _Item(EDGES[bucket], now + at / 10))
        now += 0.2
        heads = {b: q[0].enqueued_at for b, q in enumerate(queues._queues) if q}
        if not heads:
            continue
        overdue = {b for b, head in heads.items() if now - head >= max_wait}
        sizes = {b: min(len(queues._queues[b]), 4) for b in heads}
        selection = queues.pop_batch(now, lambda _: False)
        assert selection is not None
        bucket, batch, dropped = selection
        assert not dropped and 1 <= len(batch) <= 4
        assert all(item.length == EDGES[bucket] for item in batch)
        assert batch == sorted(batch, key=lambda item: item.enqueued_at)  # FIFO within a bucket
        if overdue:
            assert bucket in overdue
            assert last_served[bucket] == min(last_served[b] for b in overdue)  # turns: none starves
        else:
            assert len(batch) == max(sizes.values())
        last_served[bucket] = now


def test_an_idle_engine_starts_at_once():
    engine = RecordingEngine(EDGES, max_batch_size=4, delay_s=0.01)

    async def scenario() -> float:
        batcher = make_batcher(engine, batch_duration_millis=200.0)
        await batcher.start()
        loop = asyncio.get_running_loop()
        await batcher.infer(encoded([[1, 2]]))  # the engine thread exists now
        started = loop.time()
        await batcher.infer(encoded([[5, 6, 7]]))
        latency = loop.time() - started
        await batcher.close(1.0)
        return latency

    # Waiting for company would take the 200 ms wait bound; one engine run takes 10 ms.
    assert asyncio.run(scenario()) < 0.1


def test_a_busy_engine_still_serves_a_rare_bucket_within_the_wait_bound():
    engine = RecordingEngine(EDGES, max_batch_size=4, delay_s=0.01)

    async def scenario() -> float:
        batcher = make_batcher(engine, batch_duration_millis=20.0)
        await batcher.start()
        loop = asyncio.get_running_loop()
        # Bucket 8 is flooded with 30 full batches (300 ms of engine time).
        flood = [asyncio.ensure_future(batcher.infer(encoded([[1] * 7] * 4))) for _ in range(30)]
        await asyncio.sleep(0.005)
        started = loop.time()
        await batcher.infer(encoded([[2] * 30]))  # alone in bucket 32
        latency = loop.time() - started
        await asyncio.gather(*flood)
        await batcher.close(1.0)
        return latency

    # Wait bound (20 ms) + the batch running when it became due + its own run (+ slack),
    # far less than the 300 ms it would wait behind the flood.
    assert asyncio.run(scenario()) < 0.15


def test_backpressure_rejects_at_once_by_queued_tokens():
    engine = RecordingEngine(EDGES, max_batch_size=2, delay_s=0.02)

    async def scenario() -> None:
        batcher = make_batcher(engine, max_queue_tokens=40)
        await batcher.start()
        first = asyncio.ensure_future(batcher.infer(encoded([[1] * 16, [2] * 16])))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as rejected:
            batcher.submit(encoded([[3] * 16]))
        assert int(rejected.value.headers["Retry-After"]) >= 1
        with pytest.raises(PayloadTooLarge):
            batcher.submit(encoded([[3] * 30, [3] * 30]))
        await first
        assert (await batcher.infer(encoded([[3] * 16]))).shape == (1, 3)
        await batcher.close(1.0)

    asyncio.run(scenario())


def test_cancelled_and_expired_items_never_reach_the_engine():
    engine = RecordingEngine(EDGES, max_batch_size=1, delay_s=0.02)

    async def scenario() -> Batcher:
        batcher = make_batcher(engine)
        await batcher.start()
        blocker = asyncio.ensure_future(batcher.infer(encoded([[1] * 3] * 5)))
        await asyncio.sleep(0.005)
        cancelled = asyncio.ensure_future(batcher.infer(encoded([[9] * 3] * 3)))
        expiring = asyncio.ensure_future(batcher.infer(encoded([[8] * 3] * 2), timeout_s=0.01))
        await asyncio.sleep(0.001)
        cancelled.cancel()
        with pytest.raises(DeadlineExceeded):
            await expiring
        await blocker
        await batcher.close(1.0)
        return batcher

    batcher = asyncio.run(scenario())
    assert batcher.items_computed == 5
    assert batcher.dropped["cancelled"] == 3
    assert batcher.dropped["deadline"] == 2
    assert sum(batch for batch, _ in engine.batches) == 5


def test_an_engine_failure_fails_only_its_batch():
    engine = RecordingEngine(EDGES, max_batch_size=1, fail_on_id=666)

    async def scenario() -> None:
        batcher = make_batcher(engine)
        await batcher.start()
        bad = batcher.infer(encoded([[666, 1]]))
        good = batcher.infer(encoded([[5, 1]]))
        results = await asyncio.gather(bad, good, return_exceptions=True)
        assert isinstance(results[0], EngineFailure) and "injected" in str(results[0])
        assert isinstance(results[1], np.ndarray)
        np.testing.assert_array_equal(results[1][0], RecordingEngine.reference(np.array([5, 1]), np.array([1, 1])))
        assert (await batcher.infer(encoded([[7]]))).shape == (1, 3)
        await batcher.close(1.0)

    asyncio.run(scenario())


def test_a_hung_batch_is_given_up_and_its_worker_replaced():
    engine = RecordingEngine(EDGES, max_batch_size=1, hang_on_id=777)

    async def scenario() -> None:
        batcher = make_batcher(engine, batch_timeout_s=0.2)
        await batcher.start()
        hung = asyncio.ensure_future(batcher.infer(encoded([[777, 1]])))
        with pytest.raises(EngineTimeout, match=r"batch_timeout_s=0\.2"):
            await asyncio.wait_for(hung, 5)
        # The group keeps serving on a new worker while the old one is still stuck.
        good = await asyncio.wait_for(batcher.infer(encoded([[5, 1]])), 5)
        np.testing.assert_array_equal(good[0], RecordingEngine.reference(np.array([5, 1]), np.array([1, 1])))
        assert batcher.batches_timed_out == 1
        assert batcher.workers_alive  # healthy: the replacement serves
        # The stuck run returns at last: its result is dropped, and its worker leaves (its place is taken).
        engine.release()
        await asyncio.sleep(0.1)
        assert batcher.items_computed == 1
        assert batcher.workers_alive  # the worker that left was given up: its exit is no failure
        assert (await batcher.infer(encoded([[7]]))).shape == (1, 3)
        await batcher.close(1.0)
        assert not batcher.workers_alive

    asyncio.run(scenario())


def test_a_wedged_engine_is_refused_once_no_worker_is_left(monkeypatch):
    monkeypatch.setattr(batcher_module, "MAX_STUCK_WORKERS", 2)
    engine = RecordingEngine(EDGES, max_batch_size=1, hang_on_id=777)

    async def scenario() -> None:
        batcher = make_batcher(engine, batch_timeout_s=0.1)
        await batcher.start()
        for _ in range(3):  # the first worker, then its two replacements, all stuck
            with pytest.raises(EngineTimeout):
                await asyncio.wait_for(batcher.infer(encoded([[777]])), 5)
        with pytest.raises(Unavailable, match="not responding"):
            batcher.submit(encoded([[5]]))
        healthy_while_wedged = batcher.workers_alive
        engine.release()  # the engine comes back: a stuck worker rejoins and the group serves again
        await asyncio.sleep(0.2)
        assert not healthy_while_wedged  # unhealthy: a replica in this state is replaced (ray_serve)
        assert batcher.workers_alive
        assert (await asyncio.wait_for(batcher.infer(encoded([[5]])), 5)).shape == (1, 3)
        await batcher.close(1.0)

    asyncio.run(scenario())


def test_close_drains_queued_work_then_refuses():
    engine = RecordingEngine(EDGES, max_batch_size=2, delay_s=0.01)

    async def scenario() -> None:
        batcher = make_batcher(engine)
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.infer(encoded([[i + 1] * 5]))) for i in range(10)]
        await asyncio.sleep(0)
        await batcher.close(5.0)
        assert all(task.done() and not task.exception() for task in pending)
        with pytest.raises(Unavailable):
            batcher.submit(encoded([[1]]))

    asyncio.run(scenario())


def test_close_fails_what_cannot_drain_in_time():
    engine = RecordingEngine(EDGES, max_batch_size=1, delay_s=0.05)

    async def scenario() -> None:
        batcher = make_batcher(engine)
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.infer(encoded([[i + 1] * 5]))) for i in range(10)]
        await asyncio.sleep(0)
        await batcher.close(0.08)
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert any(isinstance(r, Unavailable) for r in results)
        assert any(isinstance(r, np.ndarray) for r in results)

    asyncio.run(scenario())


def test_concurrent_tokenization_is_coalesced_and_errors_stay_with_their_request(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from slipstream.batching.tokenization import InputTooLong, TextEncoder
    from slipstream.batching.tokenize_queue import TokenizeQueue
    from tests.batching.fake_artifact import MINILM_TOKENIZER

    encoder = TextEncoder(MINILM_TOKENIZER, max_length=16, uses_token_type_ids=True)
    requests: list[list[TextInput]] = [["a b c"], [("q", "d " * 40)], ["x " * 40, "y"], [("q2", "d2"), "mixed"]]

    async def scenario() -> list:
        with ThreadPoolExecutor(1) as executor:
            queue = TokenizeQueue(encoder, executor)
            jobs = [queue.encode(r, truncate=True) for r in requests]
            jobs.append(queue.encode(["z " * 40], truncate=False))
            return await asyncio.gather(*jobs, return_exceptions=True)

    *results, refused = asyncio.run(scenario())
    assert isinstance(refused, InputTooLong)
    for request, result in zip(requests, results, strict=True):
        alone = encoder.encode(request, truncate=True)
        np.testing.assert_array_equal(result.ids, alone.ids)
        np.testing.assert_array_equal(result.type_ids, alone.type_ids)
        np.testing.assert_array_equal(result.offsets, alone.offsets)


def test_small_requests_are_tokenized_on_the_loop_and_big_ones_in_the_worker():
    from concurrent.futures import ThreadPoolExecutor

    from slipstream.batching.tokenization import TextEncoder
    from slipstream.batching.tokenize_queue import TokenizeQueue
    from tests.batching.fake_artifact import MINILM_TOKENIZER

    encoder = TextEncoder(MINILM_TOKENIZER, max_length=64, uses_token_type_ids=True)
    small, long_text, many = ["a short text"], ["word " * 40], ["x"] * 9

    class CountingExecutor(ThreadPoolExecutor):
        submitted = 0

        def submit(self, *args, **kwargs):
            CountingExecutor.submitted += 1
            return super().submit(*args, **kwargs)

    async def scenario() -> list:
        with CountingExecutor(1) as executor:
            queue = TokenizeQueue(encoder, executor, inline_chars=64)
            results = [await queue.encode(small, truncate=True)]
            assert CountingExecutor.submitted == 0  # no hand-off for a short text
            results.append(await queue.encode(long_text, truncate=True))
            results.append(await queue.encode(many, truncate=True))  # too many items to check on the loop
            assert CountingExecutor.submitted == 2
            return results

    for request, result in zip([small, long_text, many], asyncio.run(scenario()), strict=True):
        np.testing.assert_array_equal(result.ids, encoder.encode(request, truncate=True).ids)


def test_pad_to_longest_pads_each_batch_to_its_longest_item_only():
    engine = RecordingEngine([32], max_batch_size=4)

    async def scenario() -> list[np.ndarray]:
        batcher = make_batcher(engine, edges=[32], pad_to_longest=True)
        await batcher.start()
        results = await asyncio.gather(batcher.infer(encoded([[1] * 5, [2] * 9])), batcher.infer(encoded([[3] * 2])))
        await batcher.close(1.0)
        return list(results)

    first, second = asyncio.run(scenario())
    assert all(length <= 9 for _, length in engine.batches)
    np.testing.assert_array_equal(first[1], RecordingEngine.reference(np.array([2] * 9), np.array([0] * 9)))
    np.testing.assert_array_equal(second[0], RecordingEngine.reference(np.array([3] * 2), np.array([1] * 2)))
