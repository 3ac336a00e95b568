"""text-embeddings-inference's routes: `/predict` (classifiers) and `/rerank` (cross-encoders)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from litestar import Request, Response, post
from msgspec import Meta

from slipstream.batching.errors import InvalidInput
from slipstream.batching.tokenization import TextInput, TruncationDirection
from slipstream.defaults import DEFAULT_CONSUMER_GROUP
from slipstream.server.disconnect import run_unless_disconnected
from slipstream.server.errors import INFERENCE_ERRORS
from slipstream.server.inputs import TextsOrPairs, parse_tei
from slipstream.server.middleware import timing_headers
from slipstream.server.scores import activate, sigmoid, tei_activation
from slipstream.server.state import service_state

TruncationDirectionTEI = Literal["Right", "Left", "right", "left"]


class PredictRequest(msgspec.Struct, kw_only=True):
    inputs: Annotated[
        TextsOrPairs,
        Meta(description="TEI: a string; [a, b] is ONE pair; a batch is [[text], [a, b], ...] (or bare strings)."),
    ]
    raw_scores: Annotated[bool, Meta(description="Raw logits instead of softmax (sigmoid for one label).")] = False
    truncate: Annotated[bool | None, Meta(description="Truncate over-long inputs; absent: the group's default.")] = None
    truncation_direction: Annotated[TruncationDirectionTEI, Meta(description="Which end to cut.")] = "Right"
    consumer_group: Annotated[str, Meta(description="Slipstream extension: which model serves it.")] = (
        DEFAULT_CONSUMER_GROUP
    )


class Prediction(msgspec.Struct):
    score: float
    label: str


class RerankRequest(msgspec.Struct, kw_only=True):
    query: Annotated[str, Meta(description="The query, first text of every pair.")]
    texts: Annotated[list[str], Meta(description="Documents to rank against the query.")]
    raw_scores: Annotated[bool, Meta(description="Raw logits instead of sigmoid scores.")] = False
    return_text: Annotated[bool, Meta(description="Echo each document in its result.")] = False
    truncate: Annotated[bool | None, Meta(description="Truncate over-long pairs; absent: the group's default.")] = None
    truncation_direction: Annotated[TruncationDirectionTEI, Meta(description="Which end to cut.")] = "Right"
    top_n: Annotated[int | None, Meta(description="Return only the best n.")] = None
    consumer_group: Annotated[str, Meta(description="Slipstream extension: which model serves it.")] = (
        DEFAULT_CONSUMER_GROUP
    )


class Rank(msgspec.Struct, omit_defaults=True):
    index: int
    score: float
    text: str | None = None


def _direction(value: TruncationDirectionTEI) -> TruncationDirection:
    return "left" if value in ("Left", "left") else "right"


@post("/predict", status_code=200, summary="Predict (text-embeddings-inference)", responses=INFERENCE_ERRORS)
async def predict(
    request: Request[Any, Any, Any], data: PredictRequest
) -> Response[list[Prediction] | list[list[Prediction]]]:
    """TEI's /predict: `[{"score", "label"}]` sorted by score, or a list of those for a batch.

    Note: TEI reads `["a", "b"]` as ONE pair; a batch is `[["a"], ["b"]]`.
    """
    group = service_state(request).group(data.consumer_group)
    parsed = parse_tei(data.inputs)
    scored = await run_unless_disconnected(
        request,
        group.score(parsed.items, truncate=data.truncate, direction=_direction(data.truncation_direction)),
    )
    scores = scored.logits if data.raw_scores else activate(scored.logits, tei_activation(group.manifest.num_labels))
    order = np.argsort(-scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1).tolist()
    labels = group.manifest.labels
    predictions = [
        [Prediction(score=s, label=labels[i]) for s, i in zip(row_scores, row_order, strict=True)]
        for row_scores, row_order in zip(sorted_scores, order.tolist(), strict=True)
    ]
    body = predictions[0] if parsed.single else predictions
    return Response(body, headers=timing_headers(request, scored))


@post(
    "/rerank",
    status_code=200,
    summary="Rerank documents for a query (text-embeddings-inference)",
    responses=INFERENCE_ERRORS,
)
async def rerank(request: Request[Any, Any, Any], data: RerankRequest) -> Response[list[Rank]]:
    """TEI's /rerank: `[{"index", "score", "text"?}]`, best first; `top_n` keeps the best n."""
    group = service_state(request).group(data.consumer_group)
    if group.manifest.num_labels != 1:
        raise InvalidInput(
            f"consumer group {group.name!r} has {group.manifest.num_labels} labels; /rerank needs a "
            "one-label (cross-encoder) model; use /predict or /classify"
        )
    if not data.texts:
        raise InvalidInput("texts: the list is empty")
    if data.top_n is not None and data.top_n < 1:
        raise InvalidInput("top_n must be at least 1")
    pairs: list[TextInput] = [(data.query, text) for text in data.texts]
    scored = await run_unless_disconnected(
        request,
        group.score(pairs, truncate=data.truncate, direction=_direction(data.truncation_direction)),
    )
    scores = scored.logits[:, 0] if data.raw_scores else sigmoid(scored.logits[:, 0])
    order = np.argsort(-scores, kind="stable")
    if data.top_n is not None:
        order = order[: data.top_n]
    ranks = [
        Rank(index=i, score=s, text=data.texts[i] if data.return_text else None)
        for i, s in zip(order.tolist(), scores[order].tolist(), strict=True)
    ]
    return Response(ranks, headers=timing_headers(request, scored))


ROUTES = [predict, rerank]
