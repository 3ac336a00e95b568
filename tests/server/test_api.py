"""The HTTP API, route by route, over real HTTP against `slipstream serve` with a recording engine.

The recording engine's logits are a function of each row's real tokens
([sum of ids x (1 + token type), token count, first id]), so every expected
response can be computed exactly from the tokenizer alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.batching.fakes import RecordingEngine
from tests.server.conftest import ServerProcess, fake_server_command, free_port, run_server

MAX_LENGTH = 64  # the fake artifacts' max_sequence_length


@pytest.fixture(scope="module")
def tokenizer(fake_classifier_artifact: Path) -> Tokenizer:
    return Tokenizer.from_file(str(fake_classifier_artifact / "tokenizer.json"))


def encode(tokenizer: Tokenizer, item: str | tuple[str, str]):
    """What the server should feed the model: pairs cut from the second text, texts from the end."""
    tokenizer.no_padding()
    strategy = "longest_first" if isinstance(item, str) else "only_second"
    tokenizer.enable_truncation(MAX_LENGTH, strategy=strategy)
    return tokenizer.encode(item) if isinstance(item, str) else tokenizer.encode(*item)


def expected(tokenizer: Tokenizer, item: str | tuple[str, str], num_labels: int = 3) -> list[float]:
    encoding = encode(tokenizer, item)
    return RecordingEngine.reference(np.array(encoding.ids), np.array(encoding.type_ids), num_labels).tolist()


def softmax(row: list[float]) -> list[float]:
    shifted = np.exp(np.array(row) - max(row))
    return (shifted / shifted.sum()).tolist()


@pytest.fixture(scope="module")
def client(fake_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_server.url, timeout=30) as http:
        yield http


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}
    assert body["error_type"] == error_type
    assert body["error"]
    return body


class TestClassify:
    def test_a_string_gives_one_score_list_of_raw_logits(self, client, tokenizer):
        response = client.post("/classify", json={"text": "the cat sat on the mat"})
        assert response.status_code == 200
        assert response.json() == {"result": expected(tokenizer, "the cat sat on the mat")}

    def test_a_list_gives_score_lists_in_order(self, client, tokenizer):
        texts = ["first text", "a somewhat longer second text here", "3"]
        response = client.post("/classify", json={"text": texts, "consumer_group": "primary"})
        assert response.json() == {"result": [expected(tokenizer, t) for t in texts]}
        assert len({tuple(r) for r in response.json()["result"]}) == 3

    def test_pairs_are_joined_by_the_tokenizer(self, client, tokenizer):
        pairs = [["what colour is the dog?", "the puppy is light blue."], ["a", "b"]]
        result = client.post("/classify", json={"text": pairs}).json()["result"]
        assert result == [expected(tokenizer, (first, second)) for first, second in pairs]
        # Joined as a pair (token types differ), not as one text.
        assert result[0] != expected(tokenizer, "what colour is the dog? the puppy is light blue.")

    def test_optional_fields_labels_and_activations(self, client, tokenizer):
        raw = expected(tokenizer, "hello")
        body = client.post("/classify", json={"text": "hello", "return_labels": True}).json()
        assert body == {"result": raw, "labels": ["neg", "neu", "pos"]}
        for activation, want in [
            ("none", raw),
            ("softmax", softmax(raw)),
            ("auto", softmax(raw)),  # the fake classifier's manifest says softmax
            ("sigmoid", [1 / (1 + math.exp(-x)) for x in raw]),
        ]:
            got = client.post("/classify", json={"text": "hello", "activation": activation}).json()["result"]
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6), activation

    def test_over_long_input_is_truncated_by_default_and_refused_on_request(self, client, tokenizer):
        long_text = "word " * 200
        assert client.post("/classify", json={"text": long_text}).json()["result"] == expected(tokenizer, long_text)
        assert expected(tokenizer, long_text)[1] == MAX_LENGTH
        assert_error(client.post("/classify", json={"text": long_text, "truncate": False}), 422, "validation")

    def test_pairs_keep_the_query_when_truncated(self, client, tokenizer):
        query, document = "short query", "document " * 200
        result = client.post("/classify", json={"text": [[query, document]]}).json()["result"][0]
        encoding = encode(tokenizer, (query, document))
        assert result == expected(tokenizer, (query, document))
        assert encoding.tokens[:4] == ["[CLS]", "short", "query", "[SEP]"]

    def test_timing_headers(self, client):
        response = client.post("/classify", json={"text": "hello"})
        for header in ("x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time"):
            assert float(response.headers[header]) >= 0


class TestPredictLikeTEI:
    def test_a_string_gives_sorted_softmax_predictions(self, client, tokenizer):
        body = client.post("/predict", json={"inputs": "hello there"}).json()
        probabilities = softmax(expected(tokenizer, "hello there"))
        labels = ["neg", "neu", "pos"]
        want = sorted(zip(probabilities, labels, strict=True), key=lambda scored: -scored[0])
        assert [d["label"] for d in body] == [label for _, label in want]
        assert [d["score"] for d in body] == pytest.approx([score for score, _ in want], rel=1e-5, abs=1e-7)

    def test_a_list_of_two_strings_is_one_pair(self, client, tokenizer):
        body = client.post("/predict", json={"inputs": ["a question", "an answer"], "raw_scores": True}).json()
        assert isinstance(body[0], dict)
        assert sorted(d["score"] for d in body) == sorted(expected(tokenizer, ("a question", "an answer")))

    def test_a_batch_mixes_texts_and_pairs(self, client, tokenizer):
        body = client.post("/predict", json={"inputs": [["one"], ["a", "b"]], "raw_scores": True}).json()
        assert len(body) == 2 and all(isinstance(row, list) for row in body)
        assert sorted(d["score"] for d in body[0]) == sorted(expected(tokenizer, "one"))
        assert sorted(d["score"] for d in body[1]) == sorted(expected(tokenizer, ("a", "b")))

    def test_three_strings_are_not_an_input(self, client):
        assert_error(client.post("/predict", json={"inputs": ["a", "b", "c"]}), 422, "validation")
        assert_error(client.post("/predict", json={"inputs": [["a", "b", "c"]]}), 422, "validation")


class TestTokenize:
    def test_tokens_and_count_by_reader_id_from_info(self, client, tokenizer):
        reader_id = client.get("/info").json()["groups"]["primary"]["reader_id"]
        body = client.post(f"/tokenize/{reader_id}", json={"text": "hello world"}).json()
        assert body == {"tokens": ["[CLS]", "hello", "world", "[SEP]"], "tokens_count": 4}

    def test_unknown_reader_is_404(self, client):
        assert_error(client.post("/tokenize/nope", json={"text": "x"}), 404, "not_found")


class TestOperations:
    def test_health_ready_info(self, client):
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"ready": True, "groups": {"primary": True}}
        group = client.get("/info").json()["groups"]["primary"]
        assert group["labels"] == ["neg", "neu", "pos"]
        assert group["activation"] == "softmax"
        assert group["batching"]["buckets"][-1] == MAX_LENGTH
        assert group["batching"]["max_items_per_request"] == 64
        assert group["providers"] and group["variant"]

    def test_metrics_expose_the_documented_series(self, client):
        client.post("/classify", json={"text": ["a", "b c d e f g h i j k"]})
        text = client.get("/metrics").text
        for name in (
            "slipstream_requests_total",
            "slipstream_request_duration_seconds_bucket",
            "slipstream_queue_wait_seconds_bucket",
            "slipstream_tokenization_seconds_bucket",
            "slipstream_inference_seconds_bucket",
            "slipstream_batch_size_bucket",
            "slipstream_batch_padded_tokens_bucket",
            "slipstream_padding_efficiency",
            "slipstream_queue_items",
            "slipstream_queue_tokens",
            "slipstream_items_computed_total",
        ):
            assert name in text, name
        assert 'route="/classify",status="200"' in text

    def test_openapi_documents_every_route(self, client):
        paths = client.get("/docs/openapi.json").json()["paths"]
        assert {
            "/classify",
            "/predict",
            "/rerank",
            "/tokenize/{reader_id}",
            "/health",
            "/ready",
            "/info",
            "/metrics",
        } <= set(paths)
        assert client.get("/docs").status_code == 200
        classify = paths["/classify"]["post"]
        assert {"200", "400", "404", "413", "422", "429", "503", "504"} <= set(classify["responses"])


class TestErrors:
    @pytest.mark.parametrize("body", [b'{"text": ', b"not json", b'{"text": "a"} trailing'])
    def test_malformed_json_is_400(self, client, body):
        assert_error(client.post("/classify", content=body), 400, "malformed_request")

    @pytest.mark.parametrize(
        "payload",
        [
            {"text": 3},
            {"text": []},
            {"text": [1, 2]},
            {"text": [["a", "b", "c"]]},
            {"text": [["a"]]},
            {"text": ["a", ["b", "c"]]},
            {"text": "a", "activation": "tanh"},
            {"text": "a", "timeout_ms": 0},
            {"wrong_field": "a"},
            ["a"],
        ],
    )
    def test_wrong_shapes_are_422(self, client, payload):
        assert_error(client.post("/classify", json=payload), 422, "validation")

    def test_unknown_consumer_group_is_404_listing_the_known(self, client):
        body = assert_error(
            client.post("/classify", json={"text": "a", "consumer_group": "nope"}), 404, "unknown_consumer_group"
        )
        assert "primary" in body["error"]

    def test_too_many_items_is_413(self, client):
        assert_error(client.post("/classify", json={"text": ["a"] * 65}), 413, "payload_too_large")

    def test_body_over_the_limit_is_413(self, client):
        assert_error(client.post("/classify", json={"text": "a" * 70_000}), 413, "payload_too_large")

    def test_unknown_route_and_method(self, client):
        assert_error(client.get("/nope"), 404, "not_found")
        assert client.get("/classify").status_code == 405

    def test_rerank_needs_a_one_label_model(self, client):
        assert_error(client.post("/rerank", json={"query": "q", "texts": ["a"]}), 422, "validation")

    def test_nothing_a_client_sends_gives_500(self, client):
        payloads = [
            b"",
            b"null",
            b"[]",
            b"{}",
            b'{"text": null}',
            b'{"text": {"a": 1}}',
            b'{"text": "\\ud800"}',
            b'{"text": ["' + b"x" * 5000 + b'"]}',
            b'{"text": [[]]}',
            b'{"text": "a", "consumer_group": 5}',
            b"\xff\xfe",
            b'{"text": "a", "truncate": "yes"}',
        ]
        for path in ("/classify", "/predict", "/rerank", "/tokenize/x"):
            for payload in payloads:
                response = client.post(path, content=payload)
                assert response.status_code < 500, (path, payload, response.text)
        assert client.get("/health").status_code == 200


@pytest.fixture(scope="module")
def reranker_server(fake_reranker_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "reranker.log"
    with run_server(
        fake_server_command(fake_reranker_artifact, port, "--engine-max-batch-size", "4"), port, log_path
    ) as server:
        yield server


class TestRerankLikeTEI:
    def test_ranks_best_first_with_sigmoid_scores(self, reranker_server, tokenizer):
        texts = ["a b", "a much longer document with many more words", "mid length text"]
        body = httpx.post(f"{reranker_server.url}/rerank", json={"query": "q", "texts": texts}).json()
        raw = [expected(tokenizer, ("q", t), 1)[0] for t in texts]
        order = sorted(range(3), key=lambda i: -raw[i])
        assert [r["index"] for r in body] == order
        assert [r["score"] for r in body] == pytest.approx([1 / (1 + math.exp(-raw[i])) for i in order])
        assert all(set(r) == {"index", "score"} for r in body)

    def test_raw_scores_return_text_and_top_n(self, reranker_server, tokenizer):
        texts = ["one", "two three four", "five six"]
        body = httpx.post(
            f"{reranker_server.url}/rerank",
            json={"query": "q", "texts": texts, "raw_scores": True, "return_text": True, "top_n": 2},
        ).json()
        raw = [expected(tokenizer, ("q", t), 1)[0] for t in texts]
        order = sorted(range(3), key=lambda i: -raw[i])[:2]
        assert body == [{"index": i, "score": raw[i], "text": texts[i]} for i in order]

    def test_empty_texts_is_422(self, reranker_server):
        assert_error(httpx.post(f"{reranker_server.url}/rerank", json={"query": "q", "texts": []}), 422, "validation")

    def test_classify_on_a_one_label_model_gives_one_score_per_input(self, reranker_server, tokenizer):
        body = httpx.post(f"{reranker_server.url}/classify", json={"text": [["q", "d1"], ["q", "d2"]]}).json()
        assert body == {"result": [[expected(tokenizer, ("q", d), 1)[0]] for d in ("d1", "d2")]}
