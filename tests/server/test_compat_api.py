"""Cohere's /v1/rerank and /v2/rerank, TEI's root, /tokenize and /decode, SageMaker's /ping and /invocations.

Over real HTTP against `slipstream serve` with the recording engine, whose
logits follow from the tokens alone (see test_api.py), so every expected score
is computed exactly. One server: a reranker as the default group, a
three-label classifier as `classifier`, and an API key.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tokenizers import Tokenizer

from tests.server.conftest import ServerProcess, fake_server_command, free_port, run_server
from tests.server.test_api import assert_error, expected

API_KEY = "compat-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
MAX_ITEMS = 8
DOCUMENTS = ["a b", "a much longer document with many more words", "mid length text", "zebra"]


@pytest.fixture(scope="module")
def server(
    fake_reranker_artifact: Path, fake_classifier_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("compat")
    config = directory / "slipstream.toml"
    config.write_text(
        f'api_key = "{API_KEY}"\nmax_body_bytes = 65536\n'
        f'[groups.primary]\nartifact = "{fake_reranker_artifact}"\nmax_items_per_request = {MAX_ITEMS}\n'
        f'[groups.classifier]\nartifact = "{fake_classifier_artifact}"\nmax_items_per_request = {MAX_ITEMS}\n'
    )
    port = free_port()
    with run_server(fake_server_command(None, port, "--config", str(config)), port, directory / "log") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def tokenizer(fake_reranker_artifact: Path) -> Tokenizer:
    return Tokenizer.from_file(str(fake_reranker_artifact / "tokenizer.json"))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def best_first(tokenizer: Tokenizer, query: str, documents: list[str]) -> list[tuple[int, float]]:
    """(index, relevance probability) of every document, best first."""
    scores = [sigmoid(expected(tokenizer, (query, d), 1)[0]) for d in documents]
    return sorted(enumerate(scores), key=lambda ranked: -ranked[1])


def ranked(results: list[dict], score: str = "relevance_score") -> list[tuple[int, float]]:
    return [(r["index"], r[score]) for r in results]


def assert_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]], what: str = "") -> None:
    assert [index for index, _ in got] == [index for index, _ in want], what
    assert [score for _, score in got] == pytest.approx([score for _, score in want], rel=1e-6), what


class TestCohereV2:
    def test_ranks_best_first_with_probabilities_and_cohere_meta(self, client, tokenizer):
        response = client.post("/v2/rerank", json={"model": "primary", "query": "q", "documents": DOCUMENTS})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"id", "results", "meta"}
        uuid.UUID(body["id"])
        assert_ranking(ranked(body["results"]), best_first(tokenizer, "q", DOCUMENTS))
        assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
        assert body["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
        assert float(response.headers["x-inference-time"]) >= 0

    def test_each_response_has_its_own_id(self, client):
        payload = {"query": "q", "documents": ["a"]}
        assert (
            client.post("/v2/rerank", json=payload).json()["id"] != client.post("/v2/rerank", json=payload).json()["id"]
        )

    @pytest.mark.parametrize(("top_n", "count"), [(2, 2), (1, 1), (0, 4), (None, 4), (99, 4)])
    def test_top_n_keeps_the_best_n_and_absent_zero_or_too_many_keep_all(self, client, tokenizer, top_n, count):
        payload = {"query": "q", "documents": DOCUMENTS, "top_n": top_n}
        results = client.post("/v2/rerank", json=payload).json()["results"]
        assert_ranking(ranked(results), best_first(tokenizer, "q", DOCUMENTS)[:count])

    def test_max_tokens_per_doc_ranks_each_document_by_its_first_tokens(self, client, tokenizer):
        documents = ["zebra crossing at night", "apple pie with cream", "zebra"]
        cut = client.post("/v2/rerank", json={"query": "q", "documents": documents, "max_tokens_per_doc": 1})
        prefixes = ["zebra", "apple", "zebra"]
        assert_ranking(ranked(cut.json()["results"]), best_first(tokenizer, "q", prefixes))
        whole = client.post("/v2/rerank", json={"query": "q", "documents": documents, "max_tokens_per_doc": 512})
        assert_ranking(ranked(whole.json()["results"]), best_first(tokenizer, "q", documents))

    def test_nulls_the_sdks_send_for_unset_options_are_accepted(self, client, tokenizer):
        payload = {"model": None, "query": "q", "documents": DOCUMENTS, "top_n": None}
        payload |= {"max_tokens_per_doc": None, "priority": None}
        assert_ranking(
            ranked(client.post("/v2/rerank", json=payload).json()["results"]), best_first(tokenizer, "q", DOCUMENTS)
        )

    def test_search_units_count_each_hundred_documents(self, client):
        body = client.post("/v2/rerank", json={"query": "q", "documents": ["d"] * 8}).json()
        assert body["meta"]["billed_units"] == {"search_units": 1}


class TestCohereV1:
    def test_texts_and_text_objects_mix_and_return_documents_echoes_them(self, client, tokenizer):
        documents = ["a b", {"text": "mid length text"}, {"text": "zebra", "title": "ignored"}]
        texts = ["a b", "mid length text", "zebra"]
        body = client.post("/v1/rerank", json={"query": "q", "documents": documents, "return_documents": True}).json()
        assert_ranking(ranked(body["results"]), best_first(tokenizer, "q", texts))
        assert [r["document"] for r in body["results"]] == [{"text": texts[r["index"]]} for r in body["results"]]
        assert body["meta"]["api_version"] == {"version": "1"}

    def test_documents_are_left_out_unless_asked_for(self, client):
        results = client.post("/v1/rerank", json={"query": "q", "documents": DOCUMENTS, "top_n": 2}).json()["results"]
        assert len(results) == 2 and all("document" not in r for r in results)

    def test_rank_fields_text_and_max_chunks_are_accepted(self, client, tokenizer):
        payload = {"query": "q", "documents": DOCUMENTS, "rank_fields": ["text"], "max_chunks_per_doc": 10}
        assert_ranking(
            ranked(client.post("/v1/rerank", json=payload).json()["results"]), best_first(tokenizer, "q", DOCUMENTS)
        )


class TestOtherRerankDialectsOnV1:
    def test_jina_style_request(self, client, tokenizer):
        payload = {"model": "primary", "query": "q", "documents": DOCUMENTS, "top_n": 3, "return_documents": True}
        results = client.post("/v1/rerank", json=payload).json()["results"]
        assert_ranking(ranked(results), best_first(tokenizer, "q", DOCUMENTS)[:3])
        assert all(r["document"] == {"text": DOCUMENTS[r["index"]]} for r in results)

    def test_vllm_style_request_with_top_n_zero_and_its_own_options(self, client, tokenizer):
        payload = {"model": "primary", "query": "q", "documents": DOCUMENTS, "top_n": 0, "truncate_prompt_tokens": 32}
        results = client.post("/v1/rerank", json=payload).json()["results"]
        assert_ranking(ranked(results), best_first(tokenizer, "q", DOCUMENTS))


class TestCohereErrors:
    @pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
    def test_unknown_model_is_404_listing_the_groups(self, client, path):
        body = assert_error(
            client.post(path, json={"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
            404,
            "unknown_consumer_group",
        )
        assert "'classifier', 'primary'" in body["error"]

    @pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
    def test_a_multi_label_model_cannot_rerank(self, client, path):
        response = client.post(path, json={"model": "classifier", "query": "q", "documents": ["a"]})
        assert "one-label" in assert_error(response, 422, "validation")["error"]

    @pytest.mark.parametrize(
        ("path", "payload"),
        [
            ("/v2/rerank", {"query": "q", "documents": []}),
            ("/v2/rerank", {"query": "q"}),
            ("/v2/rerank", {"documents": ["a"]}),
            ("/v2/rerank", {"query": "q", "documents": [{"text": "a"}]}),
            ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": -1}),
            ("/v2/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}),
            ("/v2/rerank", {"query": "q", "documents": ["a"], "model": 3}),
            ("/v1/rerank", {"query": "q", "documents": [{"title": "no text"}]}),
            ("/v1/rerank", {"query": "q", "documents": ["a"], "rank_fields": ["title"]}),
            ("/v1/rerank", {"query": "q", "documents": ["a"], "max_chunks_per_doc": 0}),
            ("/v1/rerank", {"query": "q", "documents": [3]}),
        ],
    )
    def test_wrong_shapes_are_422(self, client, path, payload):
        assert_error(client.post(path, json=payload), 422, "validation")

    def test_too_many_documents_is_413(self, client):
        response = client.post("/v2/rerank", json={"query": "q", "documents": ["a"] * (MAX_ITEMS + 1)})
        assert_error(response, 413, "payload_too_large")


class TestTheSameRankingEverywhere:
    def test_classify_rerank_cohere_root_and_invocations_agree(self, client, tokenizer):
        query = "what colour is the dog?"
        documents = ["the puppy is light blue.", "space is very big.", "dogs", "a blue dog"]
        logits = client.post("/classify", json={"text": [[query, d] for d in documents]}).json()["result"]
        want = sorted(((i, sigmoid(row[0])) for i, row in enumerate(logits)), key=lambda r: -r[1])
        assert len({score for _, score in want}) == len(documents), "distinct scores, so the order is a real check"
        tei_body = {"query": query, "texts": documents}
        cohere_body = {"query": query, "documents": documents}
        answers = {
            "/rerank": ranked(client.post("/rerank", json=tei_body).json(), "score"),
            "/": ranked(client.post("/", json=tei_body).json(), "score"),
            "/invocations": ranked(client.post("/invocations", json=tei_body).json(), "score"),
            "/v1/rerank": ranked(client.post("/v1/rerank", json=cohere_body).json()["results"]),
            "/v2/rerank": ranked(client.post("/v2/rerank", json=cohere_body).json()["results"]),
        }
        for route, answer in answers.items():
            assert_ranking(answer, want, route)


class TestRootAndInvocations:
    @pytest.mark.parametrize("path", ["/", "/invocations"])
    def test_a_predict_body_is_predicted_as_by_predict(self, client, path):
        for payload in (
            {"inputs": "hello there", "consumer_group": "classifier"},
            {"inputs": [["one"], ["a", "b"]], "consumer_group": "classifier", "raw_scores": True},
            {"inputs": ["a question", "an answer"]},  # a pair, on the one-label default group
        ):
            response = client.post(path, json=payload)
            assert response.status_code == 200, response.text
            assert response.json() == client.post("/predict", json=payload).json()
            assert "x-total-time" in response.headers

    @pytest.mark.parametrize("path", ["/", "/invocations"])
    def test_a_rerank_body_is_reranked_as_by_rerank(self, client, path):
        payload = {"query": "q", "texts": DOCUMENTS, "return_text": True, "top_n": 2}
        assert client.post(path, json=payload).json() == client.post("/rerank", json=payload).json()

    def test_any_content_type_is_read_as_json(self, client):
        response = client.post("/invocations", content=b'{"inputs": "hi"}', headers={"content-type": "text/plain"})
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize(
        ("body", "status", "error_type"),
        [
            (b"{", 400, "malformed_request"),
            (b"", 400, "malformed_request"),
            (b"[1]", 422, "validation"),
            (b"{}", 422, "validation"),
            (b'{"inputs": 5}', 422, "validation"),
            (b'{"query": "q"}', 422, "validation"),
            (b'{"query": "q", "texts": []}', 422, "validation"),
            (b'{"inputs": "a", "consumer_group": "nope"}', 404, "unknown_consumer_group"),
            (b'{"query": "q", "texts": ["a"], "consumer_group": "classifier"}', 422, "validation"),
            (b'{"inputs": "' + b"a" * 70_000 + b'"}', 413, "payload_too_large"),
        ],
    )
    def test_errors(self, client, body, status, error_type):
        for path in ("/", "/invocations"):
            assert_error(client.post(path, content=body), status, error_type)

    def test_a_body_valid_as_a_predict_but_not_as_a_rerank_is_predicted(self, client):
        # The schema says "any of the two"; `query` here is not a rerank's, so it is an unknown field.
        response = client.post("/", json={"inputs": "hello", "query": 5})
        assert response.status_code == 200, response.text


class TestReadinessRoutes:
    @pytest.mark.parametrize("path", ["/ping", "/"])
    def test_answer_ready_without_credentials(self, server, path):
        response = httpx.get(server.url + path)
        assert response.status_code == 200
        assert response.json() == {"ready": True, "groups": {"primary": True, "classifier": True}}


class TestTokenizeLikeTEI:
    def test_one_text_gives_one_token_list_with_byte_offsets(self, client, tokenizer):
        body = client.post("/tokenize", json={"inputs": "héllo wörld"}).json()
        ids = encode_ids(tokenizer, "héllo wörld")
        assert body == [
            [
                {"id": ids[0], "text": "[CLS]", "special": True, "start": None, "stop": None},
                {"id": ids[1], "text": "héllo", "special": False, "start": 0, "stop": 6},
                {"id": ids[2], "text": "wörld", "special": False, "start": 7, "stop": 13},
                {"id": ids[3], "text": "[SEP]", "special": True, "start": None, "stop": None},
            ]
        ]

    def test_a_list_without_special_tokens_is_not_truncated(self, client, tokenizer):
        long_text = "word " * 100
        body = client.post("/tokenize", json={"inputs": ["a b", long_text], "add_special_tokens": False}).json()
        assert [[t["text"] for t in tokens] for tokens in body] == [["a", "b"], ["word"] * 100]
        assert body[1][-1]["stop"] == len(long_text.rstrip())

    def test_the_group_is_chosen_by_consumer_group(self, client):
        response = client.post("/tokenize", json={"inputs": "a", "consumer_group": "nope"})
        assert_error(response, 404, "unknown_consumer_group")

    @pytest.mark.parametrize(
        "payload",
        [{"inputs": []}, {"inputs": 3}, {"inputs": "a", "prompt_name": "query"}, {"inputs": ["a", 1]}, {}],
    )
    def test_wrong_shapes_are_422(self, client, payload):
        assert_error(client.post("/tokenize", json=payload), 422, "validation")

    def test_too_many_texts_is_413(self, client):
        assert_error(client.post("/tokenize", json={"inputs": ["a"] * (MAX_ITEMS + 1)}), 413, "payload_too_large")

    def test_takeoffs_tokenize_by_reader_id_is_still_there(self, client):
        reader_id = client.get("/info").json()["groups"]["primary"]["reader_id"]
        assert client.post(f"/tokenize/{reader_id}", json={"text": "a b"}).json()["tokens_count"] == 4


def encode_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer.encode(text).ids


class TestDecodeLikeTEI:
    def test_one_id_list_gives_one_text(self, client, tokenizer):
        ids = encode_ids(tokenizer, "hello world")
        assert client.post("/decode", json={"ids": ids}).json() == ["hello world"]
        kept = client.post("/decode", json={"ids": ids, "skip_special_tokens": False}).json()
        assert kept == ["[CLS] hello world [SEP]"]

    def test_a_batch_and_ids_outside_the_vocabulary(self, client, tokenizer):
        ids = encode_ids(tokenizer, "hello world")
        body = client.post("/decode", json={"ids": [ids, [ids[1], 4_000_000_000]]}).json()
        assert body == ["hello world", "hello"]

    @pytest.mark.parametrize(
        "payload", [{"ids": []}, {"ids": [[1], 2]}, {"ids": [-1]}, {"ids": [2**32]}, {"ids": "a"}, {"ids": [1.5]}]
    )
    def test_wrong_shapes_are_422(self, client, payload):
        assert_error(client.post("/decode", json=payload), 422, "validation")

    def test_too_many_lists_is_413(self, client):
        assert_error(client.post("/decode", json={"ids": [[1]] * (MAX_ITEMS + 1)}), 413, "payload_too_large")


NEW_ROUTES = [
    ("post", "/v1/rerank", {"query": "q", "documents": ["a"]}),
    ("post", "/v2/rerank", {"query": "q", "documents": ["a"]}),
    ("post", "/", {"inputs": "a"}),
    ("post", "/invocations", {"inputs": "a"}),
    ("post", "/tokenize", {"inputs": "a"}),
    ("post", "/decode", {"ids": [1]}),
]


class TestAuthMetricsSchema:
    @pytest.mark.parametrize(("method", "path", "payload"), NEW_ROUTES)
    def test_every_new_route_but_the_health_checks_needs_the_key(self, server, method, path, payload):
        unauthorised = httpx.request(method, server.url + path, json=payload)
        assert_error(unauthorised, 401, "unauthorized")
        wrong = httpx.request(method, server.url + path, json=payload, headers={"authorization": "Bearer nope"})
        assert_error(wrong, 401, "unauthorized")
        assert httpx.request(method, server.url + path, json=payload, headers=AUTH).status_code == 200

    def test_requests_are_counted_by_route_template(self, client):
        for method, path, payload in NEW_ROUTES:
            client.request(method, path, json=payload)
        client.get("/ping")
        metrics = client.get("/metrics").text
        for _, path, _ in [*NEW_ROUTES, ("get", "/ping", None)]:
            assert f'slipstream_requests_total{{route="{path}",status="200"}}' in metrics, path

    def test_the_schema_documents_every_new_route_with_examples(self, client):
        schema = client.get("/docs/openapi.json").json()
        paths, components = schema["paths"], schema["components"]["schemas"]
        for method, path, _ in [*NEW_ROUTES, ("get", "/ping", None), ("get", "/", None)]:
            operation = paths[path][method]
            assert operation["summary"] and "200" in operation["responses"], path
            if method == "post":
                assert {"400", "401", "404", "413", "422", "503"} <= set(operation["responses"]), path
        for name in ("CohereRerankRequest", "CohereV2RerankRequest", "TokenizeTEIRequest", "DecodeTEIRequest"):
            assert any("examples" in field for field in components[name]["properties"].values()), name
        root_body = paths["/"]["post"]["requestBody"]["content"]["application/json"]
        assert [r["$ref"].rsplit("/", 1)[1] for r in root_body["schema"]["anyOf"]] == [
            "PredictRequest",
            "RerankRequest",
        ]
        assert set(root_body["examples"]) == {"predict", "rerank"}
        assert paths["/invocations"]["post"]["requestBody"] == paths["/"]["post"]["requestBody"]
        top_n = components["CohereV2RerankRequest"]["properties"]["top_n"]
        assert top_n["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
        assert components["CohereV2RerankRequest"]["properties"]["documents"]["minItems"] == 1

    def test_nothing_a_client_sends_gives_500(self, client):
        payloads = [
            b"",
            b"null",
            b"[]",
            b"{}",
            b'{"query": null, "documents": null}',
            b'{"query": "q", "documents": [{}]}',
            b'{"query": "q", "documents": [[]]}',
            b'{"query": "\\ud800", "documents": ["a"]}',
            b'{"query": "q", "documents": ["' + b"x" * 5000 + b'"], "max_tokens_per_doc": 3}',
            b'{"inputs": [[]]}',
            b'{"ids": [[]]}',
            b'{"ids": [99999999999999999999999]}',
            b'{"inputs": "a", "top_n": 1e400}',
            b"\xff\xfe",
        ]
        for _, path, _ in NEW_ROUTES:
            for payload in payloads:
                response = client.post(path, content=payload)
                assert response.status_code < 500, (path, payload, response.text)
        assert client.get("/health").status_code == 200
