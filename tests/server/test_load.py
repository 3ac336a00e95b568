"""Overload, disconnects, deadlines and SIGTERM, over real HTTP with a slowed-down recording engine."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.batching.fakes import RecordingEngine
from tests.server.conftest import ServerProcess, fake_server_command, free_port, run_server

pytestmark = pytest.mark.timeout(180)


def plain_tokenizer(artifact: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


def reference(tokenizer: Tokenizer, text: str) -> list[float]:
    encoding = tokenizer.encode(text)
    return RecordingEngine.reference(np.array(encoding.ids), np.array(encoding.type_ids)).tolist()


def rss_kib(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_overload_gives_only_429s_and_correct_results_then_recovers(fake_classifier_artifact, tmp_path):
    tokenizer = plain_tokenizer(fake_classifier_artifact)
    port = free_port()
    command = fake_server_command(
        fake_classifier_artifact,
        port,
        "--engine-delay-s",
        "0.01",
        "--engine-max-batch-size",
        "4",
        "--set",
        "max_queue_tokens=200",
    )
    with run_server(command, port, tmp_path / "overload.log") as server:
        texts = [f"request number {i} " + "word " * (i % 7) for i in range(250)]
        memory_before = rss_kib(server)

        async def flood() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
                return await asyncio.gather(*(client.post("/classify", json={"text": t}) for t in texts))

        responses = asyncio.run(flood())
        statuses = {r.status_code for r in responses}
        assert statuses <= {200, 429}, statuses
        assert 429 in statuses and 200 in statuses
        for text, response in zip(texts, responses, strict=True):
            if response.status_code == 200:
                assert response.json()["result"] == reference(tokenizer, text)  # not lost, not swapped
            else:
                assert response.json()["error_type"] == "overloaded"
                assert int(response.headers["retry-after"]) >= 1
        assert server.metric("slipstream_rejections_total", reason="queue_full") == sum(
            r.status_code == 429 for r in responses
        )
        assert server.metric("slipstream_queue_tokens") == 0
        assert rss_kib(server) - memory_before < 100_000
        after = httpx.post(f"{server.url}/classify", json={"text": "calm again"})
        assert after.status_code == 200 and after.json()["result"] == reference(tokenizer, "calm again")


@pytest.fixture(scope="module")
def slow_server(fake_classifier_artifact: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    command = fake_server_command(
        fake_classifier_artifact, port, "--engine-delay-s", "0.05", "--engine-max-batch-size", "1"
    )
    with run_server(command, port, tmp_path_factory.mktemp("logs") / "slow.log") as server:
        yield server


def test_disconnected_clients_items_are_not_computed(slow_server):
    computed_before = slow_server.metric("slipstream_items_computed_total")
    dropped_before = slow_server.metric("slipstream_dropped_items_total", reason="cancelled")

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=slow_server.url, timeout=30) as client:
            # ~800 ms of engine time: the impatient clients are gone long before it ends, even on a busy machine.
            blocker = asyncio.ensure_future(client.post("/classify", json={"text": ["block"] * 16}))
            await asyncio.sleep(0.1)
            impatient = httpx.AsyncClient(base_url=slow_server.url, timeout=0.1)
            results = await asyncio.gather(
                *(impatient.post("/classify", json={"text": ["gone", "away"]}) for _ in range(10)),
                return_exceptions=True,
            )
            await impatient.aclose()
            assert all(isinstance(r, httpx.TimeoutException) for r in results)
            assert (await blocker).status_code == 200

    asyncio.run(scenario())
    time.sleep(0.3)
    assert slow_server.metric("slipstream_items_computed_total") - computed_before == 16
    assert slow_server.metric("slipstream_dropped_items_total", reason="cancelled") - dropped_before == 20


def test_a_passed_deadline_is_504_and_its_work_is_dropped(slow_server):
    dropped_before = slow_server.metric("slipstream_dropped_items_total", reason="deadline")

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=slow_server.url, timeout=30) as client:
            blocker = asyncio.ensure_future(client.post("/classify", json={"text": ["block"] * 6}))
            await asyncio.sleep(0.05)
            late = await client.post("/classify", json={"text": ["late", "later"], "timeout_ms": 30})
            await blocker
            return late

    late = asyncio.run(scenario())
    assert late.status_code == 504 and late.json()["error_type"] == "timeout"
    time.sleep(0.1)
    assert slow_server.metric("slipstream_dropped_items_total", reason="deadline") - dropped_before == 2


def test_sigterm_drains_queued_work_and_exits(fake_classifier_artifact, tmp_path):
    tokenizer = plain_tokenizer(fake_classifier_artifact)
    port = free_port()
    command = fake_server_command(
        fake_classifier_artifact,
        port,
        "--engine-delay-s",
        "0.1",
        "--engine-max-batch-size",
        "2",
        "--service",
        "shutdown_timeout_s=10",
    )
    with run_server(command, port, tmp_path / "shutdown.log") as server:
        texts = [f"drain me {i}" for i in range(30)]  # 15 batches, ~1.5 s of engine time

        async def scenario() -> tuple[list[httpx.Response], float]:
            async with httpx.AsyncClient(
                base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=50)
            ) as client:
                pending = [asyncio.ensure_future(client.post("/classify", json={"text": t})) for t in texts]
                # Requests arrive much faster than the engine drains them, so work is queued when the signal comes.
                deadline = time.monotonic() + 20
                while server.metric("slipstream_queue_items") < 10:
                    assert time.monotonic() < deadline, "the requests never queued up"
                    await asyncio.sleep(0.01)
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                responses = await asyncio.gather(*pending)
                late = None
                with contextlib.suppress(httpx.TransportError):  # the listener is closed: also a refusal
                    late = await client.post("/classify", json={"text": "too late"})
                if late is not None:
                    assert late.status_code == 503
                return responses, signalled

        responses, signalled = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * len(texts)
        assert [r.json()["result"] for r in responses] == [reference(tokenizer, t) for t in texts]
        server.process.wait(timeout=15)
        assert time.monotonic() - signalled < 15
        assert server.process.returncode == 0, server.log()
