"""Request and response bodies of every route (msgspec: decoding is one C pass).

`/classify` and `/tokenize` follow Takeoff; `/predict` and `/rerank` follow
text-embeddings-inference (TEI). Fields beyond those contracts are optional
and change nothing when absent.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from slipstream.defaults import DEFAULT_CONSUMER_GROUP

# A text, or a list whose entries are texts or [text, text] pairs. (msgspec
# allows one array type per union, so list-of-texts vs list-of-pairs is told
# apart after decoding, in `inputs.py`.)
TextsOrPairs = str | list[str | list[str]]
ActivationChoice = Literal["none", "softmax", "sigmoid", "auto"]
TruncationDirectionTEI = Literal["Right", "Left", "right", "left"]


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class ClassifyRequest(msgspec.Struct, kw_only=True):
    text: Annotated[
        TextsOrPairs,
        _doc("A string, a list of strings (a batch), or a list of [first, second] pairs."),
    ]
    consumer_group: Annotated[str, _doc("Which model serves it.")] = DEFAULT_CONSUMER_GROUP
    activation: Annotated[
        ActivationChoice | None,
        _doc("Scores: raw logits when absent or none; auto follows the model's problem_type."),
    ] = None
    return_labels: Annotated[bool, _doc("Add `labels`: the label name of each score.")] = False
    truncate: Annotated[
        bool | None,
        _doc("false: an over-long input is an error (422) instead of being truncated."),
    ] = None
    timeout_ms: Annotated[
        float | None, _doc("Deadline: 504 if the work has not started within it.")
    ] = None


class ClassifyResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    result: Annotated[
        list[float | list[float]],
        _doc("One score list (one score per label) for a string input; a list of them for a list."),
    ]
    labels: Annotated[list[str] | None, _doc("Label names, in score order (return_labels).")] = None


class PredictRequest(msgspec.Struct, kw_only=True):
    inputs: Annotated[
        TextsOrPairs,
        _doc("TEI: a string; [a, b] is ONE pair; a batch is [[text], [a, b], ...] (or bare strings)."),
    ]
    raw_scores: Annotated[bool, _doc("Raw logits instead of softmax (sigmoid for one label).")] = False
    truncate: Annotated[bool | None, _doc("Truncate over-long inputs; absent: the group's default.")] = None
    truncation_direction: Annotated[TruncationDirectionTEI, _doc("Which end to cut.")] = "Right"
    consumer_group: Annotated[str, _doc("Slipstream extension: which model serves it.")] = (
        DEFAULT_CONSUMER_GROUP
    )


class Prediction(msgspec.Struct):
    score: float
    label: str


class RerankRequest(msgspec.Struct, kw_only=True):
    query: Annotated[str, _doc("The query, first text of every pair.")]
    texts: Annotated[list[str], _doc("Documents to rank against the query.")]
    raw_scores: Annotated[bool, _doc("Raw logits instead of sigmoid scores.")] = False
    return_text: Annotated[bool, _doc("Echo each document in its result.")] = False
    truncate: Annotated[bool | None, _doc("Truncate over-long pairs; absent: the group's default.")] = None
    truncation_direction: Annotated[TruncationDirectionTEI, _doc("Which end to cut.")] = "Right"
    top_n: Annotated[int | None, _doc("Return only the best n.")] = None
    consumer_group: Annotated[str, _doc("Slipstream extension: which model serves it.")] = (
        DEFAULT_CONSUMER_GROUP
    )


class Rank(msgspec.Struct, omit_defaults=True):
    index: int
    score: float
    text: str | None = None


class TokenizeRequest(msgspec.Struct, kw_only=True):
    text: str
    use_chat_template: Annotated[bool, _doc("Accepted for Takeoff clients; classifiers have none.")] = True


class TokenizeResponse(msgspec.Struct):
    tokens: list[str]
    tokens_count: int


class ErrorResponse(msgspec.Struct):
    error: str
    error_type: str


class HealthResponse(msgspec.Struct):
    status: str


class ReadyResponse(msgspec.Struct):
    ready: bool
    groups: dict[str, bool]


class BatchingInfo(msgspec.Struct, kw_only=True):
    buckets: list[int]
    max_batch_size: int
    max_batch_tokens: int | None
    batch_duration_millis: float
    max_queue_tokens: int
    max_items_per_request: int
    pad_to: str
    truncate: bool


class GroupInfo(msgspec.Struct, kw_only=True):
    consumer_group: str
    reader_id: str
    model: str
    architecture: str
    labels: list[str]
    num_labels: int
    problem_type: str
    activation: str
    max_sequence_length: int
    variant: str
    device: str
    providers: list[str]
    engine_options: dict[str, str]
    batching: BatchingInfo
    ready: bool
    versions: dict[str, str]


class InfoResponse(msgspec.Struct, kw_only=True):
    version: str
    groups: dict[str, GroupInfo]
