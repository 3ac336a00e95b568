"""Fuzzing the input parsers: the schema and the parsers agree, and no input gives a 5xx.

A body is accepted exactly when the JSON schema published in OpenAPI says it is
valid (decoded by msgspec, then read by the route's parser); whatever a client
sends, bytes or JSON, the answer is a 2xx or a 4xx with an error body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from slipstream.batching.errors import InvalidInput
from slipstream.server.api.takeoff import ClassifyRequest, TokenizeRequest
from slipstream.server.api.tei import PredictRequest, RerankRequest, decode_predict_or_rerank
from slipstream.server.app import create_app
from slipstream.server.body import decode_body, schema_components
from slipstream.server.config import build_settings
from slipstream.server.inputs import parse_takeoff, parse_tei
from tests.batching.fakes import RecordingEngine

pytestmark = pytest.mark.timeout(300)

# Each body type, with what its route reads from it beyond decoding.
PARSERS: dict[type[msgspec.Struct], Any] = {
    ClassifyRequest: lambda body: parse_takeoff(body.text),
    PredictRequest: lambda body: parse_tei(body.inputs),
    RerankRequest: lambda body: None,
    TokenizeRequest: lambda body: None,
}
COMPONENTS = schema_components(PARSERS, ref_template="#/$defs/{name}")


def validator(body_type: type[msgspec.Struct]) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator({"$ref": f"#/$defs/{body_type.__name__}", "$defs": COMPONENTS})


VALIDATORS = {body_type: validator(body_type) for body_type in PARSERS}


DECODERS = {body_type: msgspec.json.Decoder(body_type) for body_type in PARSERS}


def accepted(body_type: type[msgspec.Struct], raw: bytes) -> bool:
    try:
        PARSERS[body_type](decode_body(DECODERS[body_type], raw))
    except InvalidInput:
        return False
    return True


texts = st.text(max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | finite | texts
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
# Shapes near the valid ones, so both sides of each rule are drawn often.
text_lists = st.lists(texts | st.lists(texts, max_size=3), max_size=4)
numbers = st.integers(-3, 5) | st.floats(-2, 1e7, allow_nan=False) | st.sampled_from([0.5, 3.0, 1e300, 2**64])
fields = {
    "text": texts | text_lists | json_values,
    "inputs": texts | text_lists | json_values,
    "query": texts | json_values,
    "texts": st.lists(texts, max_size=3) | json_values,
    "top_n": numbers | json_values,
    "timeout_ms": numbers | json_values,
    "truncate": st.booleans() | st.none() | st.sampled_from([0, 1, "true"]),
    "activation": st.sampled_from(["none", "softmax", "sigmoid", "auto", "tanh", None, 1]),
    "truncation_direction": st.sampled_from(["Right", "left", "up", None]),
    "raw_scores": st.booleans() | scalars,
    "return_text": st.booleans() | scalars,
    "return_labels": st.booleans() | scalars,
    "consumer_group": texts | scalars,
    "use_chat_template": st.booleans() | scalars,
    "long_text": st.sampled_from(["truncate", "reject", "chunk", "split", None, True]),
    "return_chunks": st.booleans() | scalars,
    "unknown": json_values,
}
bodies = (
    st.dictionaries(st.sampled_from(sorted(fields)), st.none(), max_size=6).flatmap(
        lambda keys: st.fixed_dictionaries({key: fields[key] for key in keys})
    )
    | json_values
)


@settings(max_examples=500, deadline=None)
@given(body_type=st.sampled_from(list(PARSERS)), body=bodies)
def test_a_body_is_accepted_exactly_when_the_schema_calls_it_valid(body_type, body):
    raw = json.dumps(body).encode()
    valid = VALIDATORS[body_type].is_valid(json.loads(raw))
    assert accepted(body_type, raw) == valid, (body_type.__name__, body)


def test_the_published_schema_is_the_one_checked_here(fake_app):
    published = fake_app.get("/docs/openapi.json").json()["components"]["schemas"]
    for body_type in PARSERS:
        assert json.dumps(published[body_type.__name__], sort_keys=True) == json.dumps(
            _with_refs_to_components(COMPONENTS[body_type.__name__]), sort_keys=True
        )


def _with_refs_to_components(schema: Any) -> Any:
    text = json.dumps(schema).replace('"#/$defs/', '"#/components/schemas/')
    # OpenAPI's writer leaves out keys whose value is null (msgspec writes `"default": null`).
    return _drop_nulls(json.loads(text))


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def test_the_routes_taking_either_body_count_whole_floats_as_integers_too():
    # POST / and /invocations decode for themselves: the same rule as every other body.
    body = decode_predict_or_rerank(b'{"query": "q", "texts": ["a"], "top_n": 2.0, "long_text": "chunk"}')
    assert isinstance(body, RerankRequest) and body.top_n == 2 and body.long_text == "chunk"
    with pytest.raises(InvalidInput, match="top_n"):
        decode_predict_or_rerank(b'{"query": "q", "texts": ["a"], "top_n": 2.5}')


@pytest.fixture(scope="module")
def fake_app(fake_classifier_artifact: Path) -> Iterator[TestClient[Any]]:
    settings_ = build_settings(artifact=str(fake_classifier_artifact), environ={})

    def factory(group_settings: Any, manifest: Any) -> RecordingEngine:
        return RecordingEngine([8, 16, 32, manifest.max_sequence_length], num_labels=manifest.num_labels)

    with TestClient(create_app(settings_, engine_factory=factory)) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield client


raw_bodies = (
    st.binary(max_size=64)
    | bodies.map(lambda body: json.dumps(body).encode())
    | st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass"))
    | st.integers(1, 4000).map(lambda depth: b"[" * depth + b"]" * depth)
    | st.sampled_from([b'{"text": "\\ud800"}', b'{"text": 1e999}', b'{"inputs": [[' + b'"a",' * 3 + b'"b"]]}'])
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/classify", "/predict", "/rerank", "/tokenize/x"]), raw=raw_bodies)
def test_no_input_gives_a_5xx(fake_app, path, raw):
    response = fake_app.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, (path, raw, response.text)
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "error_type"}
