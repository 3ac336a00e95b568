"""`slipstream serve` on real exported tiny models, over real HTTP.

References are the engine's logits for each input alone, unpadded (batch 1,
its exact length). Under concurrent mixed traffic every variant the artifact
carries must give each item exactly its reference (within the tolerance its
manifest records for the CPU: 0, bitwise, for fp32 and int8), however the
batcher grouped and padded it; the other tests allow 1e-4.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from tokenizers import Tokenizer

from slipstream.engines import load_engine
from slipstream.manifest import load_manifest
from tests.server.conftest import ServerProcess, free_port, run_server

pytestmark = pytest.mark.timeout(300)

WORDS_TEXT = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches in distant "
    "northern villages under pale winter light"
)
WORDS = WORDS_TEXT.split()


def serve_command(artifact: Path, port: int, *flags: str, variant: str = "fp32") -> list[str]:
    return [
        sys.executable,
        "-m",
        "slipstream.cli",
        "serve",
        str(artifact),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--device",
        "cpu",
        "--variant",
        variant,
        "--log-level",
        "warning",
        *flags,
    ]


class Reference:
    """Single-item, unpadded logits from the engine itself."""

    def __init__(self, artifact: Path, variant: str = "fp32") -> None:
        self.engine = load_engine(artifact, device="cpu", variant=variant)
        manifest = json.loads((artifact / "manifest.json").read_text())
        self.max_length = manifest["max_sequence_length"]
        self.tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.uses_type_ids = "token_type_ids" in self.engine.input_names

    def logits(self, item: str | tuple[str, str]) -> np.ndarray:
        strategy = "longest_first" if isinstance(item, str) else "only_second"
        self.tokenizer.enable_truncation(self.max_length, strategy=strategy)
        encoding = self.tokenizer.encode(item) if isinstance(item, str) else self.tokenizer.encode(*item)
        ids = np.array([encoding.ids], dtype=np.int64)
        types = np.array([encoding.type_ids], dtype=np.int64) if self.uses_type_ids else None
        return self.engine.run(ids, np.ones_like(ids), types)[0]


def random_text(rng: random.Random, max_words: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words)))


@pytest.fixture(scope="module")
def classifier_artifact(tiny_artifact_factory) -> Path:
    return tiny_artifact_factory("bert", 3, ("fp32", "int8"))


@pytest.fixture(scope="module")
def reference(classifier_artifact: Path) -> Reference:
    return Reference(classifier_artifact)


@pytest.fixture(scope="module")
def server(classifier_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "real-server.log"
    with run_server(serve_command(classifier_artifact, port, "--max-batch-size", "8"), port, log_path) as srv:
        yield srv


def test_different_inputs_give_clearly_different_logits(reference):
    rows = np.stack([reference.logits(t) for t in ("a", "the quick brown fox", "winter light " * 10)])
    assert np.abs(rows[:, None, :] - rows[None, :, :]).max() > 0.1


def test_every_input_form_matches_the_single_item_reference(server, reference):
    text = "the lazy dog"
    body = httpx.post(f"{server.url}/classify", json={"text": text}).json()
    np.testing.assert_allclose(body["result"], reference.logits(text), atol=1e-4)
    texts = ["a", "seven wizards judge boxing matches " * 3, "pale light"]
    body = httpx.post(f"{server.url}/classify", json={"text": texts}).json()
    np.testing.assert_allclose(body["result"], [reference.logits(t) for t in texts], atol=1e-4)
    pairs = [["what colour is the dog?", "the puppy is light blue."], ["q", "winter " * 300]]
    body = httpx.post(f"{server.url}/classify", json={"text": pairs}).json()
    np.testing.assert_allclose(body["result"], [reference.logits(tuple(p)) for p in pairs], atol=1e-4)


@pytest.fixture(scope="module", params=["fp32", "int8"])
def variant_server(
    request: pytest.FixtureRequest, classifier_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Reference, float]]:
    """A server of each variant the artifact carries, its single-item reference and its stated CPU tolerance."""
    variant = request.param
    guarantee = load_manifest(classifier_artifact).variant(variant).invariance_on("cpu")
    assert guarantee is not None, f"{variant} records no CPU batch-invariance guarantee"
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / f"real-server-{variant}.log"
    command = serve_command(classifier_artifact, port, "--max-batch-size", "8", variant=variant)
    with run_server(command, port, log_path) as srv:
        yield srv, Reference(classifier_artifact, variant), guarantee.max_abs_diff


def test_500_concurrent_mixed_requests_each_get_exactly_their_own_logits_on_every_variant(variant_server):
    server, reference, tolerance = variant_server
    rng = random.Random(1234)
    requests: list[tuple[str, dict]] = []
    for index in range(520):
        kind = index % 4
        if kind == 0:
            requests.append(("/classify", {"text": random_text(rng)}))
        elif kind == 1:
            requests.append(("/classify", {"text": [random_text(rng) for _ in range(rng.randint(1, 5))]}))
        elif kind == 2:
            requests.append(
                (
                    "/classify",
                    {"text": [[random_text(rng, 8), random_text(rng, 120)] for _ in range(rng.randint(1, 4))]},
                )
            )
        else:
            requests.append(("/predict", {"inputs": [random_text(rng, 10), random_text(rng)], "raw_scores": True}))

    async def send_all() -> list[httpx.Response]:
        clients = [httpx.AsyncClient(base_url=server.url, timeout=120) for _ in range(24)]
        try:
            return await asyncio.gather(
                *(clients[i % len(clients)].post(path, json=body) for i, (path, body) in enumerate(requests))
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    responses = asyncio.run(send_all())
    labels = ["LABEL_0", "LABEL_1", "LABEL_2"]
    for (path, body), response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()
        if path == "/predict":
            want = reference.logits(tuple(body["inputs"]))
            scores = {p["label"]: p["score"] for p in got}
            np.testing.assert_allclose([scores[label] for label in labels], want, atol=tolerance, rtol=0)
            continue
        items = body["text"]
        if isinstance(items, str):
            np.testing.assert_allclose(got["result"], reference.logits(items), atol=tolerance, rtol=0)
        else:
            want = [reference.logits(i if isinstance(i, str) else tuple(i)) for i in items]
            np.testing.assert_allclose(got["result"], want, atol=tolerance, rtol=0)
    items_sent = sum(1 if isinstance(b.get("text", ""), str) else len(b["text"]) for _, b in requests)
    if reference.engine.max_batch_size > 1:
        assert server.metric("slipstream_batch_size_count") < items_sent, "requests were batched together"
    else:  # a per-item variant: one item per run, each alone and unpadded
        assert server.metric("slipstream_batch_size_count") >= items_sent


def test_the_takeoff_client_classifies_strings_lists_and_pairs(server, reference):
    from takeoff_client import TakeoffClient

    client = TakeoffClient(base_url="http://127.0.0.1", port=server.port)
    single = client.classify("the lazy dog", consumer_group="primary")
    np.testing.assert_allclose(single["result"], reference.logits("the lazy dog"), atol=1e-4)
    batch = client.classify(["a", "b c"], consumer_group="primary")
    np.testing.assert_allclose(batch["result"], [reference.logits("a"), reference.logits("b c")], atol=1e-4)
    pairs = client.classify([["q", "d"], ["q2", "d2"]], consumer_group="primary")
    np.testing.assert_allclose(
        pairs["result"], [reference.logits(("q", "d")), reference.logits(("q2", "d2"))], atol=1e-4
    )
    reader_id = httpx.get(f"{server.url}/info").json()["groups"]["primary"]["reader_id"]
    assert client.tokens_count("the lazy dog", reader_id=reader_id) == len(client.tokenize("the lazy dog", reader_id))


def test_info_describes_the_real_engine(server):
    group = httpx.get(f"{server.url}/info").json()["groups"]["primary"]
    assert group["device"] == "cpu" and group["variant"] == "fp32"
    assert group["batch_invariance"]["guarantee"] == "bitwise" and group["batch_invariance"]["devices"] == ["cpu"]
    assert group["fidelity"] is None  # fp32 is the reference
    int8 = group["variants"]["int8"]
    assert int8["execution"] == "per_item" and int8["fidelity"]["task"] == "classification"
    assert int8["opt_in"] is (not int8["fidelity"]["meets_bars"])
    assert "CPUExecutionProvider" in group["providers"]
    assert group["batching"]["max_batch_size"] == 8
    assert "effective configuration" in server.log() and "max_batch_size = 8" in server.log()


@pytest.fixture(scope="module")
def broken_vocab_artifact(classifier_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifact, with one extra tokenizer word whose id is past the model's embedding table."""
    directory = tmp_path_factory.mktemp("broken") / "artifact"
    shutil.copytree(classifier_artifact, directory)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.add_tokens(["zzoutofrange"])
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def test_an_engine_failure_fails_only_its_batch_and_the_service_keeps_serving(broken_vocab_artifact, tmp_path):
    port = free_port()
    with run_server(serve_command(broken_vocab_artifact, port), port, tmp_path / "broken.log") as srv:
        bad = httpx.post(f"{srv.url}/classify", json={"text": "hello zzoutofrange"})
        assert bad.status_code == 500, bad.text
        assert bad.json()["error_type"] == "engine"
        assert "engine failed" in bad.json()["error"]
        good = httpx.post(f"{srv.url}/classify", json={"text": "hello"})
        assert good.status_code == 200
        assert httpx.get(f"{srv.url}/health").status_code == 200
        assert srv.metric("slipstream_engine_failures_total") == 1


def test_a_device_that_is_not_there_is_a_one_line_error(classifier_artifact: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "slipstream.cli",
            "serve",
            str(classifier_artifact),
            "--device",
            "cuda",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "slipstream serve:" in result.stderr and "Traceback" not in result.stderr
