"""A consumer group of several readers: which reader takes a request, and readers leaving while serving."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from slipstream.batching.consumer_group import ConsumerGroup
from slipstream.batching.errors import Conflict, Unavailable
from slipstream.batching.group import ModelGroup
from slipstream.batching.settings import GroupSettings
from slipstream.manifest import load_manifest
from tests.batching.fake_artifact import write_fake_artifact
from tests.batching.fakes import RecordingEngine


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_artifact(tmp_path_factory.mktemp("group") / "a", labels=["no", "maybe", "yes"])


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as pool:
        yield pool


def reader(artifact: Path, executor: ThreadPoolExecutor, reader_id: str, delay_s: float = 0.0) -> ModelGroup:
    engine = RecordingEngine([8, 16, 64], max_batch_size=4, delay_s=delay_s)
    settings = GroupSettings(artifact=str(artifact), batch_duration_millis=0)
    manifest = load_manifest(artifact)
    # Short texts are tokenized on the loop: a request is queued as soon as its task first runs.
    return ModelGroup(
        "g", settings, manifest, engine, tokenizer_executor=executor, reader_id=reader_id, inline_tokenize_chars=256
    )


async def serving(*readers: ModelGroup) -> ConsumerGroup:
    group = ConsumerGroup("g")
    for one in readers:
        group.add(one)
        await one.start()
        await one.warmup()
    return group


def engine_of(model: ModelGroup) -> RecordingEngine:
    assert isinstance(model.engine, RecordingEngine)
    return model.engine


def test_an_idle_group_sends_requests_to_its_readers_in_turn_and_they_answer_alike(artifact, executor):
    async def scenario() -> None:
        first, second = reader(artifact, executor, "g-1"), reader(artifact, executor, "g-2")
        group = await serving(first, second)
        warm = [len(engine_of(r).batches) for r in (first, second)]
        results = [await group.score(["the same text"], truncate=None) for _ in range(6)]
        ran = [len(engine_of(r).batches) - before for r, before in zip((first, second), warm, strict=True)]
        assert ran == [3, 3]
        assert all(np.array_equal(result.logits, results[0].logits) for result in results)

    asyncio.run(scenario())


def test_the_reader_with_fewer_queued_tokens_takes_the_next_request(artifact, executor):
    async def scenario() -> None:
        busy, idle = reader(artifact, executor, "g-busy", delay_s=0.2), reader(artifact, executor, "g-idle")
        group = await serving(busy, idle)
        backlog = [asyncio.ensure_future(busy.score([f"text {i}"] * 4, truncate=None)) for i in range(4)]
        while busy.batcher.queues.tokens == 0:
            await asyncio.sleep(0.001)
        assert {group.choose().reader_id for _ in range(10)} == {"g-idle"}
        await asyncio.gather(*backlog)

    asyncio.run(scenario())


def test_a_draining_reader_finishes_what_it_holds_while_the_other_takes_new_requests(artifact, executor):
    async def scenario() -> None:
        leaving, staying = reader(artifact, executor, "g-leaving", delay_s=0.05), reader(artifact, executor, "g-2")
        group = await serving(leaving, staying)
        held = [asyncio.ensure_future(leaving.score([f"held {i}"], truncate=None)) for i in range(3)]
        await asyncio.sleep(0)  # submitted
        draining = asyncio.ensure_future(group.drain("g-leaving", timeout_s=30))
        await asyncio.sleep(0)
        assert [r.reader_id for r in group.serving()] == ["g-2"]
        during = [await group.score(["new"], truncate=None) for _ in range(3)]
        assert all(result.logits.shape == (1, 3) for result in during)
        await draining
        assert all(task.result().logits.shape == (1, 3) for task in held)  # none lost
        assert [r.reader_id for r in group.readers] == ["g-2"]

    asyncio.run(scenario())


def test_work_a_draining_reader_cannot_finish_in_time_fails_with_503(artifact, executor):
    async def scenario() -> None:
        slow = reader(artifact, executor, "g-slow", delay_s=0.3)
        group = await serving(slow)
        held = [asyncio.ensure_future(slow.score([f"held {i}"] * 2, truncate=None)) for i in range(4)]
        await asyncio.sleep(0)
        await group.drain("g-slow", timeout_s=0.05)
        outcomes = await asyncio.gather(*held, return_exceptions=True)
        assert any(isinstance(outcome, Unavailable) for outcome in outcomes)
        assert not group.readers

    asyncio.run(scenario())


def test_a_group_with_no_ready_reader_answers_503(artifact, executor):
    async def scenario() -> None:
        group = ConsumerGroup("g")
        cold = reader(artifact, executor, "g-cold")
        group.add(cold)  # joined, not warmed up
        with pytest.raises(Unavailable, match="no ready reader"):
            await group.score(["a"], truncate=None)

    asyncio.run(scenario())


def test_a_model_with_other_labels_cannot_join(artifact, executor, tmp_path):
    other = write_fake_artifact(tmp_path / "other", labels=["relevance"])
    group = ConsumerGroup("g")
    group.add(reader(artifact, executor, "g-1"))
    with pytest.raises(Conflict, match="labels"):
        group.check_compatible(load_manifest(other))
    group.check_compatible(load_manifest(artifact))  # a replica is welcome
