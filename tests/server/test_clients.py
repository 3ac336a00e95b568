"""The clients users already have, unchanged, against `slipstream serve` on real exported tiny models.

cohere (v1 `Client` and v2 `ClientV2`), LangChain's `CohereRerank` document
compressor and huggingface_hub's `InferenceClient` at the server root, each
through its public interface, with the server's API key as its credential; and
the snippets of docs/clients/, run as written but for the server's address.
The takeoff-client's own tests are in test_real_models.py. Nothing reaches the
network: every client is given a local server's URL.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.server.conftest import REPO_ROOT, ServerProcess, free_port, run_server

pytestmark = pytest.mark.timeout(300)

API_KEY = "client-key"
QUERY = "what colour is the dog?"
DOCUMENTS = [
    "the puppy is light blue.",
    "space is very big and mostly empty.",
    "a small dog in the blue winter light",
    "seven wizards quietly judge boxing matches",
]


def serve(directory: Path, config: str) -> Iterator[ServerProcess]:
    (directory / "slipstream.toml").write_text(config)
    port = free_port()
    command = [sys.executable, "-m", "slipstream.cli", "serve", "--config", str(directory / "slipstream.toml")]
    command += ["--port", str(port), "--host", "127.0.0.1", "--device", "cpu", "--variant", "fp32"]
    with run_server([*command, "--log-level", "warning"], port, directory / "log") as server:
        yield server


@pytest.fixture(scope="module")
def server(tiny_artifact_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """As `make serve` has it, a reranker as the default group; a three-label `classifier`; an API key."""
    yield from serve(
        tmp_path_factory.mktemp("clients"),
        f'api_key = "{API_KEY}"\n'
        f'[groups.primary]\nartifact = "{tiny_artifact_factory("bert", 1, ("fp32",))}"\n'
        f'[groups.classifier]\nartifact = "{tiny_artifact_factory("bert", 3, ("fp32",))}"\n',
    )


@pytest.fixture(scope="module")
def open_classifier_server(tiny_artifact_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A classifier as the default group and no API key (the takeoff-client sends none)."""
    yield from serve(
        tmp_path_factory.mktemp("open-classifier"),
        f'[groups.primary]\nartifact = "{tiny_artifact_factory("bert", 3, ("fp32",))}"\n',
    )


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def relevance(http: httpx.Client) -> list[float]:
    """Each document's relevance as /classify computes it: the sigmoid of the reranker's logit."""
    logits = http.post("/classify", json={"text": [[QUERY, d] for d in DOCUMENTS]}).json()["result"]
    scores = [1 / (1 + math.exp(-row[0])) for row in logits]
    assert len({round(s, 4) for s in scores}) == len(DOCUMENTS), "distinct scores, so the order is a real check"
    return scores


def best_first(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def test_cohere_v2_client_reranks(server, relevance):
    import cohere

    client = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    response = client.rerank(model="primary", query=QUERY, documents=DOCUMENTS, top_n=3)
    assert [r.index for r in response.results] == best_first(relevance)[:3]
    np.testing.assert_allclose(
        [r.relevance_score for r in response.results], [relevance[i] for i in best_first(relevance)[:3]], atol=1e-5
    )
    assert response.meta is not None and response.meta.api_version is not None
    assert response.meta.api_version.version == "2"


def test_cohere_v1_client_reranks_texts_and_objects_and_returns_documents(server, relevance):
    import cohere

    client = cohere.Client(api_key=API_KEY, base_url=server.url)
    documents: list[str | dict[str, str]] = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, *DOCUMENTS[2:]]
    response = client.rerank(query=QUERY, documents=documents, return_documents=True)
    assert [r.index for r in response.results] == best_first(relevance)
    np.testing.assert_allclose(
        [r.relevance_score for r in response.results], [relevance[i] for i in best_first(relevance)], atol=1e-5
    )
    assert [r.document.text for r in response.results if r.document] == [DOCUMENTS[i] for i in best_first(relevance)]


def test_cohere_client_asks_for_chunking_through_its_additional_body_parameters(server, http):
    import cohere

    long_document = " ".join(["the puppy is light blue."] * 300)  # far past the model's window
    documents = [DOCUMENTS[1], long_document]
    extension = {"long_text": "chunk", "return_chunks": True}
    client = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    response = client.rerank(
        model="primary", query=QUERY, documents=documents, request_options={"additional_body_parameters": extension}
    )
    direct = http.post("/v2/rerank", json={"model": "primary", "query": QUERY, "documents": documents, **extension})
    results = direct.json()["results"]
    assert [r.index for r in response.results] == [r["index"] for r in results]
    np.testing.assert_allclose([r.relevance_score for r in response.results], [r["relevance_score"] for r in results])
    assert {r["index"]: r["chunks"] for r in results}[1] > 1


def test_cohere_clients_see_our_errors_as_their_own(server):
    import cohere
    from cohere.errors import NotFoundError, UnauthorizedError, UnprocessableEntityError

    client = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    with pytest.raises(NotFoundError, match="classifier"):
        client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS)
    with pytest.raises(UnprocessableEntityError, match="one-label"):
        client.rerank(model="classifier", query=QUERY, documents=DOCUMENTS)
    with pytest.raises(UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=server.url).rerank(model="primary", query=QUERY, documents=["a"])


def test_langchain_cohere_rerank_compresses_documents(server, relevance):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document
    from pydantic import SecretStr

    reranker = CohereRerank(model="primary", base_url=server.url, cohere_api_key=SecretStr(API_KEY), top_n=2)
    documents = [Document(page_content=text, metadata={"source": i}) for i, text in enumerate(DOCUMENTS)]
    compressed = reranker.compress_documents(documents, QUERY)
    assert [d.metadata["source"] for d in compressed] == best_first(relevance)[:2]
    assert [d.page_content for d in compressed] == [DOCUMENTS[i] for i in best_first(relevance)[:2]]
    np.testing.assert_allclose(
        [d.metadata["relevance_score"] for d in compressed],
        [relevance[i] for i in best_first(relevance)[:2]],
        atol=1e-5,
    )


@pytest.fixture
def hub_client_may_reach_local_urls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The suite sets HF_HUB_OFFLINE, which blocks every URL; these tests' only URLs are local servers."""
    from huggingface_hub import constants
    from huggingface_hub.utils._http import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    yield
    reset_sessions()


@pytest.mark.usefixtures("hub_client_may_reach_local_urls")
def test_huggingface_inference_client_classifies_at_the_server_root(open_classifier_server):
    from huggingface_hub import InferenceClient, TextClassificationOutputElement

    text = "the quick brown fox"
    result: Any = InferenceClient(model=open_classifier_server.url).text_classification(text)
    # TEI answers one text with a flat list, best first, which the client reads as a batch of
    # one: it returns the best entry (not the list its annotation says), as it does from TEI.
    assert isinstance(result, TextClassificationOutputElement)
    best = httpx.post(f"{open_classifier_server.url}/predict", json={"inputs": text}).json()[0]
    assert result.label == best["label"]
    assert result.score == pytest.approx(best["score"], abs=1e-5)
    assert result.label in {"LABEL_0", "LABEL_1", "LABEL_2"} and 0 < result.score < 1


@pytest.mark.usefixtures("hub_client_may_reach_local_urls")
def test_huggingface_inference_client_on_a_reranker_gets_the_sigmoid_score(server, http):
    from huggingface_hub import InferenceClient

    result: Any = InferenceClient(model=server.url, token=API_KEY).text_classification("a text")
    want = http.post("/predict", json={"inputs": "a text"}).json()[0]
    assert result.label == want["label"] == "LABEL_0"
    assert result.score == pytest.approx(want["score"], abs=1e-5)


def test_every_ranking_route_agrees_with_classify(http, relevance):
    order = best_first(relevance)
    tei = {"query": QUERY, "texts": DOCUMENTS}
    cohere_body = {"model": "primary", "query": QUERY, "documents": DOCUMENTS}
    answers = {
        "/rerank": [(r["index"], r["score"]) for r in http.post("/rerank", json=tei).json()],
        "/": [(r["index"], r["score"]) for r in http.post("/", json=tei).json()],
        "/invocations": [(r["index"], r["score"]) for r in http.post("/invocations", json=tei).json()],
        "/v1/rerank": [
            (r["index"], r["relevance_score"]) for r in http.post("/v1/rerank", json=cohere_body).json()["results"]
        ],
        "/v2/rerank": [
            (r["index"], r["relevance_score"]) for r in http.post("/v2/rerank", json=cohere_body).json()["results"]
        ],
    }
    for route, answer in answers.items():
        assert [i for i, _ in answer] == order, route
        np.testing.assert_allclose([s for _, s in answer], [relevance[i] for i in order], atol=1e-5, err_msg=route)


def test_sagemaker_health_check_needs_no_key_and_invocations_predict(server, http):
    assert httpx.get(f"{server.url}/ping").status_code == 200
    assert httpx.post(f"{server.url}/invocations", json={"inputs": "a"}).status_code == 401
    body = {"inputs": "seven wizards", "consumer_group": "classifier"}
    assert http.post("/invocations", json=body).json() == http.post("/predict", json=body).json()


def test_tei_tokenize_and_decode_round_trip_on_the_real_tokenizer(http):
    tokens = http.post("/tokenize", json={"inputs": "the quick brown fox"}).json()[0]
    ids = [t["id"] for t in tokens]
    assert tokens[0]["special"] and tokens[-1]["special"] and not any(t["special"] for t in tokens[1:-1])
    assert "".join(t["text"] for t in tokens[1:-1]) == "thequickbrownfox"
    assert http.post("/decode", json={"ids": ids}).json() == ["the quick brown fox"]


CLIENT_PAGES = REPO_ROOT / "docs" / "clients"


def run_snippets(page: str, server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> str:
    """Every python block of a docs/clients page, run as written but for the server's address."""
    blocks = re.findall(r"```python\n(.*?)```", (CLIENT_PAGES / page).read_text(), flags=re.DOTALL)
    assert blocks, page
    for block in blocks:
        code = block.replace("http://localhost:3000", server.url).replace("port=3000", f"port={server.port}")
        exec(compile(code, f"docs/clients/{page}", "exec"), {"__name__": "snippet"})
    return capsys.readouterr().out


@pytest.mark.parametrize("page", ["cohere.md", "langchain.md"])
def test_the_cohere_and_langchain_pages_snippets_run(page, server, monkeypatch, capsys):
    monkeypatch.setenv("SLIPSTREAM_API_KEY", API_KEY)
    assert run_snippets(page, server, capsys).strip()


@pytest.mark.usefixtures("hub_client_may_reach_local_urls")
@pytest.mark.parametrize("page", ["huggingface.md", "takeoff.md"])
def test_the_huggingface_and_takeoff_pages_snippets_run(page, open_classifier_server, monkeypatch, capsys):
    monkeypatch.delenv("SLIPSTREAM_API_KEY", raising=False)
    assert run_snippets(page, open_classifier_server, capsys).strip()
