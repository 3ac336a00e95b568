"""`slipstream ray --address --autoscale 1:2` on a cluster started apart (as KubeRay would): a second replica when
tokens queue up; SIGTERM drains the replicas and deletes the application, and the cluster keeps running."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.ray_serve.conftest import RayServe, ray_head, replica_of, replica_pids, slipstream_ray, write_config
from tests.server.conftest import free_port

pytestmark = pytest.mark.timeout(300)


def test_queued_tokens_add_a_replica_and_sigterm_drains_and_leaves_the_cluster(fake_classifier_artifact, tmp_path):
    config = write_config(tmp_path / "slipstream.toml", {"slow": {"artifact": str(fake_classifier_artifact)}})
    with ray_head(tmp_path / "ray-head.log") as head:
        args = [
            "--config", str(config), "--address", head.address, "--replica-cpus", "0.5", "--autoscale", "1:2",
            "--target-queue-tokens", "100", "--upscale-delay-s", "1", "--metrics-interval-s", "0.5",
            "--look-back-period-s", "2",
        ]  # fmt: skip
        port = free_port()
        env = {"RAY_TMPDIR": head.env["RAY_TMPDIR"], "RAY_AUTH_MODE": "token"}
        with slipstream_ray(args, port, tmp_path / "ray.log", engine_delay_s=0.05, env=env) as cluster:
            autoscale_then_drain(cluster, head.session)
        assert head.alive(), "a cluster it joined keeps running"
        gone = httpx.post(f"http://127.0.0.1:{port}/classify", json={"text": "x", "consumer_group": "slow"})
        assert gone.status_code in (404, 503) and gone.json()["error_type"]  # Ray's answer, in our JSON


def autoscale_then_drain(cluster: RayServe, head_session: int) -> None:
    """One replica, then two under load; SIGTERM with requests in flight: all answered, the replicas gone."""
    assert len(replica_pids(head_session)) == 1
    seen: set[str | None] = set()

    async def load_until_two_replicas_answer() -> list[httpx.Response]:
        responses: list[httpx.Response] = []
        stop_at = time.monotonic() + 90
        async with httpx.AsyncClient(base_url=cluster.url, timeout=60) as client:

            async def user(u: int) -> None:
                i = 0
                while len(seen) < 2 and time.monotonic() < stop_at:
                    body = {"text": [f"user {u} request {i} with a few more words"] * 4, "consumer_group": "slow"}
                    response = await client.post("/classify", json=body)
                    responses.append(response)
                    seen.add(replica_of(response))
                    i += 1

            await asyncio.gather(*(user(u) for u in range(16)))
        return responses

    responses = asyncio.run(load_until_two_replicas_answer())
    assert len(seen) == 2, f"still one replica after {len(responses)} requests:\n{cluster.server.log()[-3000:]}"
    assert {r.status_code for r in responses} == {200}
    assert len(replica_pids(head_session)) == 2

    async def in_flight_then_sigterm() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=cluster.url, timeout=60) as client:
            requests = [
                asyncio.ensure_future(client.post("/classify", json={"text": f"last {i}", "consumer_group": "slow"}))
                for i in range(8)
            ]
            await asyncio.sleep(0.05)
            cluster.server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*requests)

    last = asyncio.run(in_flight_then_sigterm())
    assert [r.status_code for r in last] == [200] * 8  # drained, not dropped
    assert cluster.server.process.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while replica_pids(head_session) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert replica_pids(head_session) == [], "the replicas have stopped"
