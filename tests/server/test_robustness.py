"""Several consumer groups in one server, and arbitrary client input never giving a 500."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.conftest import ServerProcess, free_port, run_server

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def two_group_server(
    fake_classifier_artifact: Path, fake_reranker_artifact: Path, tmp_path_factory: pytest.TempPathFactory
):
    directory = tmp_path_factory.mktemp("two-groups")
    config = directory / "slipstream.toml"
    config.write_text(
        f"max_body_bytes = 32768\n"
        f'[groups.primary]\nartifact = "{fake_classifier_artifact}"\nmax_items_per_request = 16\n'
        f'[groups.reranker]\nartifact = "{fake_reranker_artifact}"\nbatch_duration_millis = 2\n'
    )
    port = free_port()
    import sys

    command = [sys.executable, "-m", "tests.server.fake_server", "--config", str(config), "--port", str(port)]
    with run_server(command, port, directory / "server.log") as server:
        yield server


def test_each_consumer_group_serves_its_own_model(two_group_server: ServerProcess):
    url = two_group_server.url
    info = httpx.get(f"{url}/info").json()["groups"]
    assert set(info) == {"primary", "reranker"}
    assert info["primary"]["num_labels"] == 3 and info["reranker"]["num_labels"] == 1
    assert info["reranker"]["batching"]["batch_duration_millis"] == 2
    assert info["primary"]["reader_id"] != info["reranker"]["reader_id"]
    assert len(httpx.post(f"{url}/classify", json={"text": "a"}).json()["result"]) == 3
    assert len(httpx.post(f"{url}/classify", json={"text": "a", "consumer_group": "reranker"}).json()["result"]) == 1
    ranks = httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["a", "b"], "consumer_group": "reranker"})
    assert ranks.status_code == 200 and {r["index"] for r in ranks.json()} == {0, 1}
    unknown = httpx.post(f"{url}/classify", json={"text": "a", "consumer_group": "x"}).json()
    assert "primary" in unknown["error"] and "reranker" in unknown["error"]


def test_truncation_direction_left_keeps_the_end(two_group_server: ServerProcess):
    url = two_group_server.url
    long_start = "alpha " * 100 + "omega"
    right = httpx.post(f"{url}/predict", json={"inputs": long_start, "raw_scores": True}).json()
    left = httpx.post(
        f"{url}/predict", json={"inputs": long_start, "raw_scores": True, "truncation_direction": "Left"}
    ).json()
    assert right != left


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=50)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"text": json_values},
        optional={
            "consumer_group": st.sampled_from(["primary", "reranker", "nope"]) | json_values,
            "activation": st.sampled_from(["none", "softmax", "sigmoid", "auto", "bad"]) | json_values,
            "return_labels": json_values,
            "truncate": st.booleans() | json_values,
            "timeout_ms": st.floats(-1, 1e6, allow_nan=False) | json_values,
        },
    ),
    st.fixed_dictionaries(
        {"text": st.one_of(texts, st.lists(texts, max_size=20), st.lists(st.lists(texts, max_size=3), max_size=20))}
    ),
    st.fixed_dictionaries(
        {"inputs": st.one_of(texts, st.lists(texts, max_size=4), st.lists(st.lists(texts, max_size=3), max_size=5))},
        optional={"raw_scores": json_values, "truncation_direction": json_values},
    ),
    st.fixed_dictionaries(
        {"query": texts | json_values, "texts": st.lists(texts, max_size=5) | json_values},
        optional={
            "top_n": st.integers(-2, 10) | json_values,
            "return_text": json_values,
            "consumer_group": st.sampled_from(["reranker", "primary"]),
        },
    ),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/classify", "/predict", "/rerank", "/tokenize/nope"]), body=bodies)
def test_no_client_input_gives_a_500(two_group_server: ServerProcess, path: str, body: object):
    response = httpx.post(two_group_server.url + path, json=body, timeout=30)
    assert response.status_code < 500, (path, body, response.text)
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "error_type"}
