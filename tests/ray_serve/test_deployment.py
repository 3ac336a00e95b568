"""A replica's hooks without a cluster: the replica header, the health check and the autoscaling stats,
on the real app (`create_app`) with a recording engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from slipstream.batching import batcher as batcher_module
from slipstream.batching.settings import GroupSettings
from slipstream.manifest import Manifest
from slipstream.ray_serve.deployment import ReplicaHeader, SlipstreamReplica, UnhealthyReplica, queued_tokens
from slipstream.server.app import create_app
from slipstream.server.config import build_settings
from slipstream.server.lifespan import service_lifespan
from slipstream.server.state import ServiceState
from tests.batching.fakes import RecordingEngine
from tests.server.test_load import plain_tokenizer


@asynccontextmanager
async def replica(
    artifact: Path, group: dict[str, Any] | None = None, **engine: Any
) -> AsyncIterator[tuple[SlipstreamReplica, httpx.AsyncClient]]:
    """The app a replica builds, started (lifespan: engine workers, warm-up), and the replica around it."""
    settings = build_settings(config={"groups": {"primary": {"artifact": str(artifact), **(group or {})}}}, environ={})

    def factory(group: GroupSettings, manifest: Manifest) -> RecordingEngine:
        return RecordingEngine([8, 16, 64], **engine)

    app = create_app(settings, engine_factory=factory)
    instance = SlipstreamReplica({"groups": {"primary": {"artifact": str(artifact)}}}, read_environment=False)
    instance._state = app.state.service
    transport = httpx.ASGITransport(app=cast(Any, ReplicaHeader(app, "r-1")))
    # The app's own start-up and shutdown (as Ray runs them), on this event loop.
    async with (
        service_lifespan(app.state.service)(app),
        httpx.AsyncClient(transport=transport, base_url="http://r") as client,
    ):
        yield instance, client


def state_of(instance: SlipstreamReplica) -> ServiceState:
    assert instance._state is not None
    return instance._state


def test_every_response_names_its_replica(fake_classifier_artifact):
    async def scenario() -> None:
        async with replica(fake_classifier_artifact) as (instance, client):
            await instance.check_health()  # waits for warm-up
            for response in (await client.post("/classify", json={"text": "hi"}), await client.get("/nope")):
                assert response.headers["x-slipstream-replica"] == "r-1"
            assert (await client.get("/nope")).json()["error_type"] == "not_found"

    asyncio.run(scenario())


def test_the_first_health_check_waits_for_warm_up_then_passes(fake_classifier_artifact):
    async def scenario() -> None:
        async with replica(fake_classifier_artifact, delay_s=0.05) as (instance, client):
            assert not state_of(instance).ready
            await instance.check_health()
            assert state_of(instance).ready
            assert (await client.get("/ready")).status_code == 200

    asyncio.run(scenario())


def test_a_failed_warm_up_makes_the_replica_unhealthy(fake_classifier_artifact):
    async def scenario() -> None:
        async with replica(fake_classifier_artifact, fail_on_id=1) as (instance, _):  # warm-up runs all-ones batches
            with pytest.raises(UnhealthyReplica, match="of group 'primary' is failed: warm-up failed"):
                await instance.check_health()

    asyncio.run(scenario())


def test_a_stopped_engine_worker_makes_the_replica_unhealthy(fake_classifier_artifact):
    async def scenario() -> None:
        async with replica(fake_classifier_artifact) as (instance, _):
            await instance.check_health()
            (reader,) = state_of(instance).groups["primary"].readers
            await reader.batcher.close(1.0)
            await asyncio.sleep(0.05)
            with pytest.raises(UnhealthyReplica, match=r"the engine of reader .* \(group 'primary'\) has no working"):
                await instance.check_health()

    asyncio.run(scenario())


def test_an_engine_hung_past_the_watchdog_makes_the_replica_unhealthy(fake_classifier_artifact, monkeypatch):
    # With no stuck worker allowed, the first hung batch leaves the engine no worker (issue 16's watchdog):
    # the replica refuses work with 503, and Ray is told to replace it.
    monkeypatch.setattr(batcher_module, "MAX_STUCK_WORKERS", 0)
    (wedge,) = plain_tokenizer(fake_classifier_artifact).encode("wedge", add_special_tokens=False).ids

    async def scenario() -> None:
        group = {"batch_timeout_s": 0.2}
        async with replica(fake_classifier_artifact, group, hang_on_id=wedge) as (instance, client):
            await instance.check_health()
            hung = await client.post("/classify", json={"text": "wedge"})
            assert hung.status_code == 504 and hung.headers["x-slipstream-replica"] == "r-1"
            refused = await client.post("/classify", json={"text": "calm"})
            assert refused.status_code == 503
            with pytest.raises(UnhealthyReplica, match="stuck past batch_timeout_s"):
                await instance.check_health()
            (reader,) = state_of(instance).groups["primary"].readers
            cast(RecordingEngine, reader.batcher.engine).release()  # let the stuck thread end with the test

    asyncio.run(scenario())


def test_autoscaling_stats_are_the_tokens_waiting_in_the_batchers(fake_classifier_artifact):
    async def scenario() -> None:
        async with replica(fake_classifier_artifact, delay_s=0.2, max_batch_size=1) as (instance, client):
            await instance.check_health()
            assert instance.record_autoscaling_stats() == {"queued_tokens": 0.0}
            pending = [asyncio.ensure_future(client.post("/classify", json={"text": f"text {i}"})) for i in range(4)]
            await asyncio.sleep(0.1)
            queued = instance.record_autoscaling_stats()["queued_tokens"]
            assert queued > 0 and queued == queued_tokens(state_of(instance))
            await asyncio.gather(*pending)
            assert instance.record_autoscaling_stats() == {"queued_tokens": 0.0}

    asyncio.run(scenario())
