"""`ModelGroup.score` with long_text "chunk": windows are the batcher's items, folded back per input.

The recording engine's logits depend only on each row's real tokens, so every
expected score is computed here from the tokenizer alone: windows cut by plain
slicing of the tokenizer's own encoding (an implementation independent of
the one served), one reference row per window, then max or mean.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import msgspec
import numpy as np
import pytest
from tokenizers import Tokenizer

from slipstream.batching.errors import DeadlineExceeded, InvalidInput, PayloadTooLarge, QueueFull
from slipstream.batching.group import ModelGroup
from slipstream.batching.settings import GroupSettings
from slipstream.batching.tokenization import TextInput
from slipstream.manifest import load_manifest
from tests.batching.fake_artifact import write_fake_artifact
from tests.batching.fakes import RecordingEngine
from tests.batching.reference_windows import plain_tokenizer, recording_engine_scores
from tests.batching.reference_windows import reference_windows as windows_by_slicing

pytestmark = pytest.mark.timeout(120)
WINDOW = 32
EDGES = [8, 16, WINDOW]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return write_fake_artifact(tmp_path_factory.mktemp("c"), labels=["a", "b", "c"], max_sequence_length=WINDOW)


@pytest.fixture(scope="module")
def reranker(tmp_path_factory) -> Path:
    return write_fake_artifact(tmp_path_factory.mktemp("r"), labels=["relevance"], max_sequence_length=WINDOW)


@pytest.fixture(scope="module")
def plain(classifier) -> Tokenizer:
    return plain_tokenizer(classifier / "tokenizer.json")


class CountingMetrics:
    def __init__(self) -> None:
        self.chunked_inputs = 0
        self.chunk_windows = 0

    def __getattr__(self, name):  # every other report is ignored
        return lambda *args, **kwargs: None

    def chunked(self, inputs: int, windows: int) -> None:
        self.chunked_inputs += inputs
        self.chunk_windows += windows


@contextmanager
def group_for(
    artifact: Path, engine: RecordingEngine, metrics=None, recorded_window: int | None = None, **settings
) -> Iterator[ModelGroup]:
    """A group on `artifact`, its manifest recording `recorded_window` as `slipstream export --chunk-window` would."""
    manifest = msgspec.structs.replace(load_manifest(artifact), chunk_window=recorded_window)
    with ThreadPoolExecutor(1) as executor:
        yield ModelGroup(
            "g",
            GroupSettings(artifact=str(artifact), **settings),
            manifest,
            engine,
            tokenizer_executor=executor,
            metrics=metrics,
        )


def run(group: ModelGroup, scenario):
    async def main():
        await group.start()
        try:
            return await scenario()
        finally:
            await group.batcher.close(5.0)

    return asyncio.run(main())


def reference_windows(plain: Tokenizer, item: TextInput) -> list[tuple[list[int], list[int]]]:
    return windows_by_slicing(plain, item, WINDOW)


def expected(plain: Tokenizer, item: TextInput, how: str, num_labels: int = 3) -> tuple[np.ndarray, int]:
    scores, rows = recording_engine_scores(plain, item, WINDOW, how, num_labels)
    return scores, len(rows)


def words(rng: random.Random, count: int) -> str:
    vocabulary = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards"]
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def test_windows_of_concurrent_requests_never_mix_and_fold_back_to_their_own_input(classifier, reranker, plain):
    rng = random.Random(17)
    requests: list[list[TextInput]] = []
    for _ in range(40):
        size = rng.randint(1, 4)
        if rng.random() < 0.5:
            requests.append([words(rng, rng.randint(1, 120)) for _ in range(size)])
        else:
            query = words(rng, rng.randint(1, 8))
            requests.append([(query, words(rng, rng.randint(1, 120))) for _ in range(size)])
    for artifact, labels, how in ((classifier, 3, "mean"), (reranker, 1, "max")):
        engine = RecordingEngine(EDGES, max_batch_size=4, delay_s=0.002, num_labels=labels, parallel_runs=2)
        with group_for(artifact, engine) as group:
            assert group.chunk_aggregate == how  # the default by model type

            async def scenario(group=group):
                return await asyncio.gather(*(group.score(r, long_text="chunk") for r in requests))

            results = run(group, scenario)
        for request, scored in zip(requests, results, strict=True):
            wanted = [expected(plain, item, how, labels) for item in request]
            np.testing.assert_allclose(scored.logits, np.stack([w for w, _ in wanted]), rtol=1e-6)
            assert scored.chunks is not None
            assert scored.chunks.windows.tolist() == [count for _, count in wanted]
            assert (scored.chunks.best is None) == (how == "mean")
        assert any(count > 1 for scored in results for count in scored.chunks.windows.tolist())


def test_a_max_names_the_window_that_gave_it(reranker, plain):
    document = " ".join(["filler words here"] * 20) + " the puppy is light blue"
    item = ("what colour is the dog?", document)
    engine = RecordingEngine(EDGES, num_labels=1)
    with group_for(reranker, engine) as group:
        scored = run(group, lambda: group.score([item], long_text="chunk"))
    rows = [RecordingEngine.reference(np.array(i), np.array(t), 1)[0] for i, t in reference_windows(plain, item)]
    assert scored.chunks.best.tolist() == [[int(np.argmax(rows))]]
    assert scored.logits[0, 0] == max(rows)


def test_an_input_that_fits_scores_exactly_the_same_chunked_as_truncated(classifier):
    items: list[TextInput] = ["a short text", ("a query", "a short document"), ""]
    with group_for(classifier, RecordingEngine(EDGES)) as group:

        async def scenario():
            return await group.score(items, long_text="chunk"), await group.score(items, long_text="truncate")

        chunked, truncated = run(group, scenario)
    assert chunked.logits.tobytes() == truncated.logits.tobytes()
    assert chunked.chunks.windows.tolist() == [1, 1, 1] and truncated.chunks is None


def test_windows_are_bucketed_and_batched_like_any_other_items(classifier, plain):
    text = " ".join(["word"] * 60)  # two full windows and a shorter last one
    engine = RecordingEngine(EDGES, max_batch_size=8)
    with group_for(classifier, engine, pad_to="bucket") as group:
        scored = run(group, lambda: group.score([text, "short"], long_text="chunk"))
    assert [len(ids) for ids, _ in reference_windows(plain, text)] == [32, 32, 16]
    assert scored.chunks.windows.tolist() == [3, 1]
    # The full windows run together in the last bucket, the short ones in their own.
    assert sorted(engine.batches) == [(1, 8), (1, 16), (2, 32)]
    assert group.batcher.items_computed == 4


def test_every_windows_tokens_count_against_the_queue(classifier):
    text = " ".join(["word"] * 100)  # 5 windows, 138 tokens; 32 tokens truncated
    with group_for(classifier, RecordingEngine(EDGES), max_queue_tokens=100) as group:

        async def scenario():
            assert (await group.score([text], long_text="truncate")).logits.shape == (1, 3)
            with pytest.raises(PayloadTooLarge, match="tokens"):
                await group.score([text], long_text="chunk")

        run(group, scenario)

    slow = RecordingEngine(EDGES, max_batch_size=1, delay_s=1.0)
    with group_for(classifier, slow, max_queue_tokens=140) as group:

        async def busy_queue():
            first = asyncio.ensure_future(group.score([text], long_text="chunk"))
            while not group.batcher.queues.items:  # tokenized and queued; its first window runs
                await asyncio.sleep(0.005)
            # Its other windows still queue at least 106 tokens: 64 more no longer fit.
            assert group.batcher.queues.tokens >= 106
            with pytest.raises(QueueFull):
                await group.score([text, text], long_text="truncate")
            first.cancel()

        run(group, busy_queue)


def test_a_cancelled_or_expired_request_drops_all_its_windows_together(classifier):
    text = " ".join(["word"] * 100)
    # One bucket, one item per batch: everything runs in arrival order.
    engine = RecordingEngine([WINDOW], max_batch_size=1, delay_s=0.1)
    with group_for(classifier, engine) as group:
        submit, queued = group.batcher.submit, asyncio.Event()

        def submit_and_tell(*args, **kwargs):
            request = submit(*args, **kwargs)
            queued.set()
            return request

        group.batcher.submit = submit_and_tell  # type: ignore[method-assign]

        async def scenario():
            blocker = asyncio.ensure_future(group.score(["block"] * 10))  # 1 s of engine work
            await queued.wait()
            queued.clear()
            cancelled = asyncio.ensure_future(group.score([text], long_text="chunk"))
            await queued.wait()  # its windows are queued behind the blocker
            cancelled.cancel()
            expiring = asyncio.ensure_future(group.score([text, text], long_text="chunk", timeout_s=0.5))
            with pytest.raises(DeadlineExceeded):
                await expiring
            await blocker
            windows = group.encoder.encode([text], truncate=False, chunking=group.chunking).windows_per_input
            assert windows is not None
            return windows[0]

        windows = int(run(group, scenario))
    assert windows > 1
    assert group.batcher.dropped["cancelled"] == windows
    assert group.batcher.dropped["deadline"] == 2 * windows
    assert group.batcher.items_computed == 10


def test_refusals_inputs_that_need_too_many_windows_413_a_query_that_fills_the_window_422(classifier):
    with group_for(classifier, RecordingEngine(EDGES), max_chunks_per_input=3) as group:

        async def scenario():
            await group.score([" ".join(["word"] * 60)], long_text="chunk")  # 3 windows: allowed
            with pytest.raises(PayloadTooLarge, match="at most 3"):
                await group.score(["ok", " ".join(["word"] * 200)], long_text="chunk")
            with pytest.raises(InvalidInput, match="no room is left"):
                await group.score([(" ".join(["query"] * 29), "document")], long_text="chunk")
            with pytest.raises(InvalidInput, match="accepts at most 32"):
                await group.score([" ".join(["word"] * 60)], long_text="reject")
            with pytest.raises(InvalidInput, match="contradicts"):
                await group.score(["text"], long_text="reject", truncate=True)

        run(group, scenario)


def test_the_groups_settings_give_the_default_mode_and_the_aggregation(classifier):
    text = " ".join(["word"] * 60)
    with group_for(classifier, RecordingEngine(EDGES), long_text="chunk", chunk_aggregate="max") as group:

        async def scenario():
            return await group.score([text]), await group.score([text], truncate=True)

        scored, truncated = run(group, scenario)
    assert scored.chunks.windows.tolist() == [3] and scored.chunks.best is not None
    assert truncated.chunks is None
    with group_for(classifier, RecordingEngine(EDGES), truncate=False) as group:
        assert group.settings.default_long_text() == "reject"
        with pytest.raises(InvalidInput):
            run(group, lambda: group.score([text]))


def test_a_shorter_chunk_window_cuts_shorter_windows_and_the_models_maximum_caps_it(classifier, plain):
    text = " ".join(["word"] * 60)
    with group_for(classifier, RecordingEngine(EDGES), chunk_window=16) as group:
        scored = run(group, lambda: group.score([text], long_text="chunk"))
        encoded = group.encoder.encode([text], truncate=False, chunking=group.chunking)
    assert int(encoded.lengths.max()) == 16
    assert scored.chunks.windows.tolist() == [len(windows_by_slicing(plain, text, 16))] == [6]
    with group_for(classifier, RecordingEngine(EDGES), chunk_window=4096) as group:
        assert group.chunking.window == WINDOW


def test_the_window_an_artifact_records_is_the_default_and_the_groups_own_setting_overrides_it(classifier, plain):
    text = " ".join(["word"] * 60)
    with group_for(classifier, RecordingEngine(EDGES), recorded_window=16) as group:
        assert group.chunking.window == 16
        scored = run(group, lambda: group.score([text], long_text="chunk"))
    assert scored.chunks.windows.tolist() == [len(windows_by_slicing(plain, text, 16))]
    with group_for(classifier, RecordingEngine(EDGES), recorded_window=16, chunk_window=32) as group:
        assert group.chunking.window == 32


def test_a_lower_max_sequence_length_caps_the_windows_too(classifier):
    text = " ".join(["word"] * 60)
    with group_for(classifier, RecordingEngine(EDGES), max_sequence_length=32) as group:
        assert group.chunking.window == 32
        scored = run(group, lambda: group.score([text], long_text="chunk"))
        encoded = group.encoder.encode([text], truncate=False, chunking=group.chunking)
    assert int(encoded.lengths.max()) == 32 and scored.chunks.windows.tolist() == [3]


def test_metrics_count_the_inputs_chunked_and_their_windows(classifier):
    metrics = CountingMetrics()
    with group_for(classifier, RecordingEngine(EDGES), metrics=metrics) as group:

        async def scenario():
            await group.score([" ".join(["word"] * 60), "short"], long_text="chunk")
            await group.score([" ".join(["word"] * 60)], long_text="truncate")

        run(group, scenario)
    assert (metrics.chunked_inputs, metrics.chunk_windows) == (2, 4)
