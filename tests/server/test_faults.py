"""Faults stay contained: a hung engine costs only the requests of its batch, and the group keeps serving."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest
from tokenizers import Tokenizer

from tests.server.conftest import fake_server_command, free_port, run_server

pytestmark = pytest.mark.timeout(120)

BATCH_TIMEOUT_S = 1.0
HANG_WORD = "wedge"  # a batch holding this word's token never returns from the engine


def test_a_hung_batch_fails_with_504_and_the_group_keeps_serving(fake_classifier_artifact: Path, tmp_path: Path):
    hang_id = Tokenizer.from_file(str(fake_classifier_artifact / "tokenizer.json")).token_to_id(HANG_WORD)
    port = free_port()
    command = fake_server_command(
        fake_classifier_artifact,
        port,
        "--engine-hang-on-id",
        str(hang_id),
        "--engine-max-batch-size",
        "1",  # the hung batch holds only the hung request
        "--set",
        f"batch_timeout_s={BATCH_TIMEOUT_S}",
    )
    with run_server(command, port, tmp_path / "server.log") as server:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            hung = pool.submit(httpx.post, f"{server.url}/classify", json={"text": HANG_WORD}, timeout=30)
            time.sleep(0.1)  # the hung batch is running: these queue behind it, then run on the replacement
            others = [pool.submit(httpx.post, f"{server.url}/classify", json={"text": t}, timeout=30) for t in "abc"]
            answer = hung.result()
            waited = time.monotonic() - started
            assert answer.status_code == 504, answer.text
            assert answer.json()["error_type"] == "engine_timeout"
            assert "batch_timeout_s=1" in answer.json()["error"]
            # Within the watchdog's bound: the timeout, and a quarter of it for the watchdog to look.
            assert waited < BATCH_TIMEOUT_S * 1.25 + 2, waited
            assert [other.result().status_code for other in others] == [200, 200, 200]
        assert httpx.post(f"{server.url}/classify", json={"text": "later"}).status_code == 200
        assert server.metric("slipstream_batch_timeouts_total", group="primary") == 1
        assert "ran past batch_timeout_s" in server.log()
