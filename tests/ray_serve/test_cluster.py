"""Through Ray Serve: the same answers as one plain server, from both replicas; overload and a killed replica."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest

from tests.ray_serve.conftest import AUTH, RayServe, replica_of
from tests.server.test_load import plain_tokenizer, reference

pytestmark = pytest.mark.timeout(300)

PRIMARY_REQUESTS: list[tuple[str, str, dict]] = [
    ("POST", "/classify", {"text": "I loved it"}),
    ("POST", "/classify", {"text": ["a", "seven wizards judge boxing matches " * 3, "pale light"]}),
    ("POST", "/classify", {"text": [["what colour is the dog?", "the puppy is light blue."]], "return_labels": True}),
    ("POST", "/classify", {"text": "winter " * 300, "activation": "softmax"}),
    ("POST", "/predict", {"inputs": [["the lazy dog"], ["a", "b"]], "raw_scores": True}),
    ("POST", "/predict", {"inputs": "one text"}),
    ("POST", "/rerank", {"query": "q", "texts": ["first", "second doc", "third"], "consumer_group": "reranker"}),
    ("POST", "/classify", {"text": "x", "consumer_group": "nobody"}),  # 404, the known groups listed
    ("POST", "/classify", {"text": "winter " * 300, "truncate": False}),  # 422
    ("POST", "/classify", {"text": 3}),  # 422, wrong type
    ("POST", "/rerank", {"query": "q", "texts": ["a"]}),  # 422: primary has 3 labels
    ("GET", "/info", {}),
    ("GET", "/health", {}),
    ("GET", "/ready", {}),
    # Routes of other API families (issue 15), served through Ray with no change to the Ray front end.
    ("POST", "/v2/rerank", {"model": "reranker", "query": "q", "documents": ["first", "second doc"], "top_n": 1}),
    ("POST", "/v1/rerank", {"model": "reranker", "query": "q", "documents": ["a", "b"], "return_documents": True}),
    ("POST", "/tokenize", {"inputs": "hello world"}),
    ("POST", "/decode", {"ids": [101, 7592, 102]}),
    ("POST", "/", {"inputs": "one text"}),
    ("GET", "/ping", {}),
    # Strict bodies and the published schema (issue 16): the replica's app decides, as on one server.
    ("POST", "/classify", {"text": "x", "no_such_field": 1}),
    ("POST", "/predict", {"inputs": "x", "truncate": "yes"}),
    ("POST", "/v2/rerank", {"model": "reranker", "query": "q", "documents": ["a", "b"], "top_n": 1.0}),
    ("GET", "/docs/openapi.json", {}),
]


def _send(url: str, method: str, path: str, body: dict, headers: dict[str, str] = AUTH) -> httpx.Response:
    if method == "GET":
        return httpx.get(url + path, headers=headers, timeout=60)
    return httpx.post(url + path, json=body, headers=headers, timeout=60)


def _comparable(response: httpx.Response) -> tuple[int, bytes]:
    """Status and body, less what differs between any two responses (Cohere's response `id`)."""
    data = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    if isinstance(data, dict) and "id" in data:
        return response.status_code, json.dumps({k: v for k, v in data.items() if k != "id"}).encode()
    return response.status_code, response.content


def test_answers_through_ray_equal_a_plain_server_bitwise(ray_cluster: RayServe, plain_server):
    for method, path, body in PRIMARY_REQUESTS:
        through_ray = _send(ray_cluster.url, method, path, body)
        plain = _send(plain_server.url, method, path, body)
        assert _comparable(through_ray) == _comparable(plain), (path, body)
        assert through_ray.headers["content-type"] == plain.headers["content-type"]
        assert replica_of(through_ray)
    reader_id = httpx.get(f"{plain_server.url}/info", headers=AUTH).json()["groups"]["primary"]["reader_id"]
    through_ray, plain = (
        httpx.post(f"{url}/tokenize/{reader_id}", json={"text": "hello world"}, headers=AUTH)
        for url in (ray_cluster.url, plain_server.url)
    )
    assert through_ray.status_code == 200 and through_ray.json() == plain.json()


def test_errors_and_auth_are_the_servers_own(ray_cluster: RayServe, plain_server):
    cases = [
        ("POST", "/classify", {"text": "no key"}, {}),  # 401
        ("POST", "/classify", {"text": "wrong key"}, {"Authorization": "Bearer nope"}),
        ("GET", "/no-such-route", {}, AUTH),  # 404
    ]
    for method, path, body, headers in cases:
        through_ray = _send(ray_cluster.url, method, path, body, headers)
        plain = _send(plain_server.url, method, path, body, headers)
        assert (through_ray.status_code, through_ray.json()) == (plain.status_code, plain.json())
    not_json = httpx.post(f"{ray_cluster.url}/classify", content=b"{nope", headers=AUTH)
    assert not_json.status_code == 400 and not_json.json()["error_type"] == "malformed_request"
    too_big = httpx.post(f"{ray_cluster.url}/classify", json={"text": "a" * 70_000}, headers=AUTH)
    assert too_big.status_code == 413 and replica_of(too_big)
    assert httpx.get(f"{ray_cluster.url}/health").status_code == 200  # public, as on one server


def test_a_body_that_stops_arriving_is_cut_off_as_on_one_server(ray_cluster: RayServe, plain_server):
    async def trickle(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            + f"authorization: {AUTH['Authorization']}\r\n".encode()
            + b'content-length: 100\r\n\r\n{"text": '
        )
        try:
            return await asyncio.wait_for(reader.read(), 60)  # until the server closes the connection
        finally:
            writer.close()

    async def both() -> list[bytes]:
        return await asyncio.gather(*(trickle(server.port) for server in (ray_cluster.server, plain_server)))

    answers = asyncio.run(both())
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
    ray_body, plain_body = (json.loads(answer.split(b"\r\n\r\n", 1)[1]) for answer in answers)
    assert ray_body == plain_body and ray_body["error_type"] == "request_timeout"


def test_both_replicas_serve_and_each_says_which_it_is(ray_cluster: RayServe):
    async def many() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=8)  # 8 at a time
        async with httpx.AsyncClient(base_url=ray_cluster.url, headers=AUTH, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/classify", json={"text": f"text {i}"}) for i in range(40)))

    responses = asyncio.run(many())
    assert {r.status_code for r in responses} == {200}
    assert len({replica_of(r) for r in responses}) == 2
    metrics = httpx.get(f"{ray_cluster.url}/metrics", headers=AUTH)
    assert metrics.status_code == 200 and "slipstream_queue_tokens" in metrics.text and replica_of(metrics)


def test_overload_gives_429s_with_retry_after_and_correct_answers_to_the_rest(
    ray_cluster: RayServe, fake_classifier_artifact
):
    tokenizer = plain_tokenizer(fake_classifier_artifact)
    texts = [f"request number {i} " + "word " * (5 + i % 7) for i in range(150)]

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=ray_cluster.url, headers=AUTH, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/classify", json={"text": t, "consumer_group": "slow"}) for t in texts)
            )

    responses = asyncio.run(flood())
    assert {r.status_code for r in responses} == {200, 429}
    for text, response in zip(texts, responses, strict=True):
        if response.status_code == 200:
            assert response.json()["result"] == reference(tokenizer, text)
        else:
            assert response.json()["error_type"] == "overloaded"
            assert int(response.headers["retry-after"]) >= 1
    # The replicas' batchers refuse past their token limit; Ray's router may refuse too, when more than
    # max_queued_requests wait for a replica with room: both answer as above. Which refuses first depends
    # on timing (on a busy machine the router's queue can fill before any batcher's), so neither is required.
    calm = httpx.post(
        f"{ray_cluster.url}/classify", json={"text": "calm again", "consumer_group": "slow"}, headers=AUTH
    )
    assert calm.status_code == 200 and calm.json()["result"] == reference(tokenizer, "calm again")


def test_a_replica_killed_under_load_loses_no_request_and_comes_back(ray_cluster: RayServe, fake_classifier_artifact):
    tokenizer = plain_tokenizer(fake_classifier_artifact)
    before = ray_cluster.replica_pids()
    assert len(before) == 2
    results: list[tuple[str, httpx.Response]] = []

    async def load() -> None:
        async with httpx.AsyncClient(base_url=ray_cluster.url, headers=AUTH, timeout=120) as client:

            async def user(u: int) -> None:
                for i in range(30):
                    text = f"user {u} request {i} " + "word " * (i % 5)
                    response = await client.post("/classify", json={"text": text, "consumer_group": "steady"})
                    results.append((text, response))

            async def kill_one() -> None:
                while len(results) < 20:
                    await asyncio.sleep(0.01)
                os.kill(before[0], signal.SIGKILL)

            await asyncio.gather(kill_one(), *(user(u) for u in range(8)))

    asyncio.run(load())
    assert len(results) == 8 * 30  # every request was answered
    assert {r.status_code for _, r in results} <= {200, 503}
    for text, response in results:
        if response.status_code == 200:
            assert response.json()["result"] == reference(tokenizer, text)  # its own answer, not another's
        else:
            assert response.json()["error_type"] == "unavailable" and response.headers["retry-after"]
    assert sum(r.status_code == 200 for _, r in results) >= len(results) - 8  # at most one failure per user

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = ray_cluster.replica_pids()
        if len(pids) == 2 and before[0] not in pids:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no replacement replica: {ray_cluster.replica_pids()} (killed {before[0]})")
    ray_cluster.wait_for_log(r"stopped before it answered|Replica\(id=.*died", timeout_s=5)
    seen: set[str | None] = set()
    while time.monotonic() < deadline and len(seen) < 2:
        response = httpx.post(f"{ray_cluster.url}/classify", json={"text": "back"}, headers=AUTH, timeout=60)
        if response.status_code == 200:
            seen.add(replica_of(response))
    assert len(seen) == 2, "both replicas serve again"
