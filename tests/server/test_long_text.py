"""`long_text` and `return_chunks` on every scoring route, over real HTTP with a recording engine.

Expected scores are computed from the tokenizer alone: each window cut by
slicing the tokenizer's own encoding, the recording engine's reference row per
window, then the mean (classifiers) or max (one-label rerankers).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.batching.reference_windows import plain_tokenizer, recording_engine_scores
from tests.server.conftest import ServerProcess, free_port, run_server

WINDOW = 64  # the fake artifacts' max_sequence_length
LONG = " ".join(f"w{n % 97}" for n in range(150))  # about 300 tokens: several windows


@pytest.fixture(scope="module")
def server(
    fake_classifier_artifact: Path, fake_reranker_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("long-text")
    config = directory / "groups.toml"
    config.write_text(
        f'[groups.primary]\nartifact = "{fake_classifier_artifact}"\n\n'
        f'[groups.reranker]\nartifact = "{fake_reranker_artifact}"\nmax_chunks_per_input = 12\n'
    )
    port = free_port()
    command = [sys.executable, "-m", "tests.server.fake_server", "--config", str(config), "--port", str(port)]
    with run_server([*command, "--engine-max-batch-size", "4"], port, directory / "server.log") as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def plain(fake_classifier_artifact: Path):
    return plain_tokenizer(fake_classifier_artifact / "tokenizer.json")


def chunked(plain, item, how: str, num_labels: int = 3) -> tuple[list[float], int, list[int]]:
    """(scores, window count, best window per label) the server should give."""
    scores, rows = recording_engine_scores(plain, item, WINDOW, how, num_labels)
    return scores.tolist(), len(rows), rows.argmax(axis=0).tolist()


class TestClassify:
    def test_a_long_text_is_the_mean_of_its_windows_and_return_chunks_counts_them(self, client, plain):
        scores, windows, _ = chunked(plain, LONG, "mean")
        assert windows > 2
        body = client.post("/classify", json={"text": LONG, "long_text": "chunk", "return_chunks": True}).json()
        assert body["result"] == pytest.approx(scores, rel=1e-6)
        assert body["chunks"] == windows
        assert "best_chunk" not in body  # the mean has no deciding window

        batch = client.post(
            "/classify", json={"text": ["short", LONG], "long_text": "chunk", "return_chunks": True}
        ).json()
        assert batch["chunks"] == [1, windows]
        assert batch["result"][1] == pytest.approx(scores, rel=1e-6)

    def test_a_one_label_model_takes_the_max_and_names_its_window(self, client, plain):
        item = ("a query", LONG)
        scores, windows, best = chunked(plain, item, "max", num_labels=1)
        body = client.post(
            "/classify",
            json={"text": [list(item)], "consumer_group": "reranker", "long_text": "chunk", "return_chunks": True},
        ).json()
        assert body == {"result": [pytest.approx(scores, rel=1e-6)], "chunks": [windows], "best_chunk": [best]}

    def test_without_chunk_or_return_chunks_the_response_is_unchanged(self, client):
        truncated = client.post("/classify", json={"text": LONG}).json()
        assert set(truncated) == {"result"}
        quiet = client.post("/classify", json={"text": LONG, "long_text": "chunk"}).json()
        assert set(quiet) == {"result"} and quiet != truncated


class TestPredict:
    def test_each_prediction_carries_its_inputs_window_count(self, client, plain):
        scores, windows, _ = chunked(plain, LONG, "mean")
        body = client.post(
            "/predict", json={"inputs": [[LONG], ["short"]], "long_text": "chunk", "return_chunks": True}
        ).json()
        exps = [math.exp(s - max(scores)) for s in scores]
        probabilities = sorted((e / sum(exps) for e in exps), reverse=True)
        assert [p["score"] for p in body[0]] == pytest.approx(probabilities, rel=1e-5)
        assert {p["chunks"] for p in body[0]} == {windows}
        assert {p["chunks"] for p in body[1]} == {1}
        assert all(set(p) == {"score", "label", "chunks"} for row in body for p in row)


class TestRerank:
    def test_documents_are_ranked_by_their_best_window_which_each_rank_names(self, client, plain):
        query = "what colour is the dog"
        texts = [LONG, "the puppy is light blue", " ".join(reversed(LONG.split()))]
        wanted = [chunked(plain, (query, text), "max", num_labels=1) for text in texts]
        body = client.post(
            "/rerank",
            json={
                "query": query,
                "texts": texts,
                "consumer_group": "reranker",
                "long_text": "chunk",
                "return_chunks": True,
                "raw_scores": True,
            },
        ).json()
        order = sorted(range(3), key=lambda i: -wanted[i][0][0])
        assert [rank["index"] for rank in body] == order
        for rank in body:
            scores, windows, best = wanted[rank["index"]]
            assert rank == {
                "index": rank["index"],
                "score": pytest.approx(scores[0], rel=1e-6),
                "chunks": windows,
                "best_chunk": best[0],
            }

    def test_documents_that_fit_rank_exactly_as_without_chunk(self, client):
        request = {"query": "q", "texts": ["a b", "c d e", "f"], "consumer_group": "reranker"}
        plain_body = client.post("/rerank", json=request).json()
        chunk_body = client.post("/rerank", json={**request, "long_text": "chunk"}).json()
        assert chunk_body == plain_body
        with_chunks = client.post("/rerank", json={**request, "long_text": "chunk", "return_chunks": True}).json()
        assert [{k: r[k] for k in ("index", "score")} for r in with_chunks] == plain_body
        assert {(r["chunks"], r["best_chunk"]) for r in with_chunks} == {(1, 0)}


class TestRefusals:
    def test_an_input_needing_more_windows_than_allowed_is_413(self, client):
        response = client.post(
            "/rerank",
            json={"query": "q", "texts": [LONG * 3], "consumer_group": "reranker", "long_text": "chunk"},
        )
        assert response.status_code == 413, response.text
        assert response.json()["error_type"] == "payload_too_large"
        assert "at most 12" in response.json()["error"]

    def test_a_query_that_fills_the_window_is_422(self, client):
        response = client.post(
            "/rerank",
            json={"query": LONG, "texts": ["a document"], "consumer_group": "reranker", "long_text": "chunk"},
        )
        assert response.status_code == 422, response.text
        assert "no room is left" in response.json()["error"]

    def test_reject_refuses_an_over_long_input_and_contradictory_fields_are_422(self, client):
        rejected = client.post("/predict", json={"inputs": LONG, "long_text": "reject"})
        assert rejected.status_code == 422 and "chunk" in rejected.json()["error"]
        contradiction = client.post("/classify", json={"text": "a", "long_text": "reject", "truncate": True})
        assert contradiction.status_code == 422 and "contradicts" in contradiction.json()["error"]
        unknown = client.post("/classify", json={"text": "a", "long_text": "split"})
        assert unknown.status_code == 422


def test_info_shows_each_groups_long_text_settings(client):
    groups = client.get("/info").json()["groups"]
    assert {k: groups["primary"]["batching"][k] for k in ("long_text", "chunk_aggregate", "max_chunks_per_input")} == {
        "long_text": "truncate",
        "chunk_aggregate": "mean",
        "max_chunks_per_input": 64,
    }
    assert groups["reranker"]["batching"]["chunk_aggregate"] == "max"
    assert groups["reranker"]["batching"]["max_chunks_per_input"] == 12


def test_metrics_count_chunked_inputs_and_their_windows(client, server, plain):
    before = (server.metric("slipstream_chunked_inputs_total"), server.metric("slipstream_chunk_windows_total"))
    client.post("/classify", json={"text": [LONG, "short"], "long_text": "chunk"}).raise_for_status()
    after = (server.metric("slipstream_chunked_inputs_total"), server.metric("slipstream_chunk_windows_total"))
    windows = chunked(plain, LONG, "mean")[1]
    assert (after[0] - before[0], after[1] - before[1]) == (2, windows + 1)


QUERY = "what colour is the dog"
DOCUMENTS = [LONG, "the puppy is light blue", " ".join(reversed(LONG.split()))]


class TestCohere:
    def test_v1_and_v2_rank_by_the_best_window_as_rerank_does_and_name_it(self, client):
        rerank = client.post(
            "/rerank",
            json={
                "query": QUERY,
                "texts": DOCUMENTS,
                "consumer_group": "reranker",
                "long_text": "chunk",
                "return_chunks": True,
            },
        ).json()
        wanted = [(r["index"], pytest.approx(r["score"], rel=1e-6), r["chunks"], r["best_chunk"]) for r in rerank]
        assert {r["index"]: r["chunks"] for r in rerank}[0] > 2
        for path in ("/v1/rerank", "/v2/rerank"):
            body = client.post(
                path,
                json={
                    "model": "reranker",
                    "query": QUERY,
                    "documents": DOCUMENTS,
                    "long_text": "chunk",
                    "return_chunks": True,
                },
            ).json()
            got = [(r["index"], r["relevance_score"], r["chunks"], r["best_chunk"]) for r in body["results"]]
            assert got == wanted, path

    def test_without_chunk_a_long_document_is_truncated_and_results_keep_cohere_s_shape(self, client):
        request = {"model": "reranker", "query": QUERY, "documents": DOCUMENTS[:1]}
        truncated = client.post("/v2/rerank", json=request).json()["results"]
        chunked = client.post("/v2/rerank", json={**request, "long_text": "chunk"}).json()["results"]
        assert set(truncated[0]) == set(chunked[0]) == {"index", "relevance_score"}
        assert truncated[0]["relevance_score"] != chunked[0]["relevance_score"]


@pytest.mark.parametrize("path", ["/", "/invocations"])
def test_the_routes_taking_either_body_chunk_as_predict_and_rerank_do(client, path):
    predict = {"inputs": [[LONG], ["short"]], "long_text": "chunk", "return_chunks": True}
    assert client.post(path, json=predict).json() == client.post("/predict", json=predict).json()
    rerank = {
        "query": "q",
        "texts": [LONG, "a b"],
        "consumer_group": "reranker",
        "long_text": "chunk",
        "return_chunks": True,
    }
    answer = client.post(path, json=rerank).json()
    assert answer == client.post("/rerank", json=rerank).json()
    assert {r["index"]: r["chunks"] for r in answer}[0] > 2


# Every route that scores inputs with a model; the test below also catches one added without long_text.
SCORING_ROUTES = {"/classify", "/predict", "/rerank", "/v1/rerank", "/v2/rerank", "/", "/invocations"}


def test_every_scoring_route_documents_long_text_and_return_chunks(client):
    spec = client.get("/docs/openapi.json").json()
    schemas = spec["components"]["schemas"]
    with_long_text, scoring = set(), set()
    for path, operations in spec["paths"].items():
        body = operations.get("post", {}).get("requestBody")
        if body is None:
            continue
        schema = body["content"]["application/json"]["schema"]
        references = [choice["$ref"] for choice in schema.get("anyOf", [schema])]
        for reference in references:
            properties = schemas[reference.rsplit("/", 1)[-1]]["properties"]
            if {"truncate", "documents"} & set(properties):  # it scores inputs with a model
                scoring.add(path)
            if {"long_text", "return_chunks"} <= set(properties):
                with_long_text.add(path)
            if "long_text" in properties:
                modes = [sorted(choice.get("enum", [])) for choice in properties["long_text"]["anyOf"]]
                assert ["chunk", "reject", "truncate"] in modes, path
    assert scoring == with_long_text == SCORING_ROUTES
