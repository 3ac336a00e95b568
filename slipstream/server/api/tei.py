"""text-embeddings-inference's routes: `/predict` (classifiers), `/rerank` (cross-encoders), the root
route that takes either body, and `/tokenize` and `/decode`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import msgspec
import numpy as np
from litestar import Request, Response, get, post, route
from litestar.enums import HttpMethod
from litestar.openapi.spec import Example, OpenAPIMediaType, Operation, Reference, RequestBody, Schema
from msgspec import Meta
from tokenizers import Encoding

from slipstream.batching.consumer_group import ConsumerGroup
from slipstream.batching.errors import InvalidInput, PayloadTooLarge
from slipstream.batching.tokenization import TruncationDirection
from slipstream.defaults import DEFAULT_CONSUMER_GROUP
from slipstream.server.api.operations import ReadyResponse, readiness
from slipstream.server.body import convert_body
from slipstream.server.disconnect import run_unless_disconnected
from slipstream.server.errors import INFERENCE_ERRORS, MalformedRequest, error_specs
from slipstream.server.inputs import TeiInputs, parse_tei
from slipstream.server.long_text import LongTextField, ReturnChunksField, requested_chunks
from slipstream.server.middleware import timing_headers
from slipstream.server.openapi import one_of
from slipstream.server.ranking import rank, require_one_label
from slipstream.server.scores import activate, tei_activation
from slipstream.server.state import service_state

TruncationDirectionTEI = Literal["Right", "Left", "right", "left"]


class PredictRequest(msgspec.Struct, kw_only=True):
    inputs: Annotated[
        TeiInputs,
        Meta(
            description="TEI: a string; [a] or [a, b] is ONE input (a text, a pair); a batch is a list of "
            '[text], [a, b] or strings, with at least one list: [["a"], ["a", "b"], "c"].'
        ),
    ]
    raw_scores: Annotated[bool, Meta(description="Raw logits instead of softmax (sigmoid for one label).")] = False
    truncate: Annotated[bool | None, Meta(description="Truncate over-long inputs; absent: the group's default.")] = None
    truncation_direction: Annotated[TruncationDirectionTEI, Meta(description="Which end to cut.")] = "Right"
    consumer_group: Annotated[str, Meta(description="Slipstream extension: which model serves it.")] = (
        DEFAULT_CONSUMER_GROUP
    )
    long_text: LongTextField = None
    return_chunks: ReturnChunksField = False


class Prediction(msgspec.Struct, omit_defaults=True):
    score: float
    label: str
    chunks: Annotated[int | None, Meta(description="return_chunks: the windows this input took.")] = None
    best_chunk: Annotated[
        int | None, Meta(description="return_chunks, max aggregation: the window that gave this label's score.")
    ] = None


class RerankRequest(msgspec.Struct, kw_only=True):
    query: Annotated[str, Meta(description="The query, first text of every pair.")]
    texts: Annotated[list[str], Meta(min_length=1, description="Documents to rank against the query.")]
    raw_scores: Annotated[bool, Meta(description="Raw logits instead of sigmoid scores.")] = False
    return_text: Annotated[bool, Meta(description="Echo each document in its result.")] = False
    truncate: Annotated[bool | None, Meta(description="Truncate over-long pairs; absent: the group's default.")] = None
    truncation_direction: Annotated[TruncationDirectionTEI, Meta(description="Which end to cut.")] = "Right"
    top_n: Annotated[Annotated[int, Meta(ge=1)] | None, Meta(description="Return only the best n.")] = None
    consumer_group: Annotated[str, Meta(description="Slipstream extension: which model serves it.")] = (
        DEFAULT_CONSUMER_GROUP
    )
    long_text: LongTextField = None
    return_chunks: ReturnChunksField = False


class Rank(msgspec.Struct, omit_defaults=True):
    index: int
    score: float
    text: str | None = None
    chunks: Annotated[int | None, Meta(description="return_chunks: the windows this document took.")] = None
    best_chunk: Annotated[
        int | None, Meta(description="return_chunks, max aggregation: the window that gave its score.")
    ] = None


def _direction(value: TruncationDirectionTEI) -> TruncationDirection:
    return "left" if value in ("Left", "left") else "right"


async def predict_response(
    request: Request[Any, Any, Any], data: PredictRequest
) -> Response[list[Prediction] | list[list[Prediction]]]:
    group = service_state(request).group(data.consumer_group)
    parsed = parse_tei(data.inputs)
    scored = await run_unless_disconnected(
        request,
        group.score(
            parsed.items,
            truncate=data.truncate,
            long_text=data.long_text,
            direction=_direction(data.truncation_direction),
        ),
    )
    scores = scored.logits if data.raw_scores else activate(scored.logits, tei_activation(group.manifest.num_labels))
    order = np.argsort(-scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1).tolist()
    labels = group.manifest.labels
    # return_chunks: per input its window count, per label the window that gave its score.
    chunks = requested_chunks(scored, data.return_chunks)
    windows: list[int | None] = [None] * len(sorted_scores) if chunks is None else chunks.windows.tolist()
    best: list[list[int | None]] = (
        [[None] * len(labels)] * len(sorted_scores)
        if chunks is None or chunks.best is None
        else np.take_along_axis(chunks.best, order, axis=1).tolist()
    )
    predictions = [
        [
            Prediction(score=s, label=labels[i], chunks=count, best_chunk=window)
            for s, i, window in zip(row_scores, row_order, row_best, strict=True)
        ]
        for row_scores, row_order, count, row_best in zip(sorted_scores, order.tolist(), windows, best, strict=True)
    ]
    body = predictions[0] if parsed.single else predictions
    return Response(body, headers=timing_headers(request, scored))


@post("/predict", status_code=200, summary="Predict (text-embeddings-inference)", responses=INFERENCE_ERRORS)
async def predict(
    request: Request[Any, Any, Any], data: PredictRequest
) -> Response[list[Prediction] | list[list[Prediction]]]:
    """TEI's /predict: `[{"score", "label"}]` sorted by score, or a list of those for a batch.

    Note: TEI reads `["a", "b"]` as ONE pair; a batch is `[["a"], ["b"]]`.
    """
    return await predict_response(request, data)


async def rerank_response(request: Request[Any, Any, Any], data: RerankRequest) -> Response[list[Rank]]:
    group = service_state(request).group(data.consumer_group)
    require_one_label(group)
    ranking = await rank(
        request,
        group,
        data.query,
        data.texts,
        top_n=data.top_n,
        raw_scores=data.raw_scores,
        truncate=data.truncate,
        long_text=data.long_text,
        direction=_direction(data.truncation_direction),
    )
    chunks = ranking.reported_chunks(data.return_chunks)
    ranks = [
        Rank(index=i, score=s, text=data.texts[i] if data.return_text else None, chunks=w, best_chunk=b)
        for i, s, (w, b) in zip(ranking.indices, ranking.scores, chunks, strict=True)
    ]
    return Response(ranks, headers=timing_headers(request, ranking.scored))


@post(
    "/rerank",
    status_code=200,
    summary="Rerank documents for a query (text-embeddings-inference)",
    responses=INFERENCE_ERRORS,
)
async def rerank(request: Request[Any, Any, Any], data: RerankRequest) -> Response[list[Rank]]:
    """TEI's /rerank: `[{"index", "score", "text"?}]`, best first; `top_n` keeps the best n."""
    return await rerank_response(request, data)


# TEI's root route and SageMaker's /invocations take either body.


def decode_predict_or_rerank(body: bytes) -> PredictRequest | RerankRequest:
    """A body with `query` or `texts` is a rerank request; any other, a predict request.

    When it is not valid as the one its keys say, it is tried as the other (the
    schema says "any of the two"), and the first one's problem is reported.
    """
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(
            'the body must be an object: {"inputs": ...} to predict, {"query": ..., "texts": [...]} to rerank'
        )
    shapes: tuple[type[PredictRequest | RerankRequest], ...] = (RerankRequest, PredictRequest)
    if "query" not in raw and "texts" not in raw:
        shapes = shapes[::-1]
    problem = ""
    for shape in shapes:
        try:
            return convert_body(raw, shape)
        except msgspec.ValidationError as exc:
            problem = problem or str(exc)
    raise InvalidInput(f"{problem} (read as a {'/rerank' if shapes[0] is RerankRequest else '/predict'} body)")


async def predict_or_rerank(request: Request[Any, Any, Any]) -> Response[Any]:
    data = decode_predict_or_rerank(await request.body())
    if isinstance(data, RerankRequest):
        return await rerank_response(request, data)
    return await predict_response(request, data)


@dataclass
class PredictOrRerankOperation(Operation):
    """The request body of the routes that take a /predict or a /rerank body."""

    def __post_init__(self) -> None:
        schema = Schema(
            any_of=[
                Reference(ref="#/components/schemas/PredictRequest"),
                Reference(ref="#/components/schemas/RerankRequest"),
            ]
        )
        examples: dict[str, Example | Reference] = {
            "predict": Example(summary="a classifier", value={"inputs": "I loved it"}),
            "rerank": Example(
                summary="a reranker",
                value={"query": "What colour is the dog?", "texts": ["The puppy is light blue.", "Space is big."]},
            ),
        }
        self.request_body = RequestBody(
            required=True, content={"application/json": OpenAPIMediaType(schema=schema, examples=examples)}
        )


PredictOrRerank = list[Prediction] | list[list[Prediction]] | list[Rank]


@post(
    "/",
    status_code=200,
    summary="Predict or rerank, by the body (text-embeddings-inference's root route)",
    responses=INFERENCE_ERRORS,
    operation_class=PredictOrRerankOperation,
)
async def root(request: Request[Any, Any, Any]) -> Response[PredictOrRerank]:
    """TEI's `POST /`: a /predict body is predicted, a /rerank body (`query`, `texts`) reranked.

    TEI picks by model type (classifiers predict, one-label models rerank); each
    body it accepts is answered the same here, and a one-label model also predicts.
    """
    return await predict_or_rerank(request)


@get(
    "/",
    summary="Ready (text-embeddings-inference's root health route)",
    opt={"public": True},
    responses=error_specs(503),
)
async def root_ready(request: Request[Any, Any, Any]) -> ReadyResponse:
    """200 once every group is warmed up, 503 before and while shutting down, as /ready."""
    return readiness(request)


TokenId = Annotated[int, Meta(ge=0, le=2**32 - 1)]
_TOKEN_ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}


class TokenizeTEIRequest(msgspec.Struct, kw_only=True):
    inputs: Annotated[
        str | Annotated[list[str], Meta(min_length=1)],
        Meta(
            description="A text, or a list of texts.",
            examples=["What is Deep Learning?"],
            extra_json_schema=one_of({"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}),
        ),
    ]
    add_special_tokens: Annotated[bool, Meta(description="Include the model's special tokens ([CLS], [SEP]).")] = True
    prompt_name: Annotated[
        None, Meta(description="TEI's sentence-transformers prompt; classifiers have none, so only null.")
    ] = None
    consumer_group: Annotated[str, Meta(description="Slipstream extension: whose tokenizer.")] = DEFAULT_CONSUMER_GROUP


class SimpleToken(msgspec.Struct):
    id: Annotated[int, Meta(examples=[7592])]
    text: Annotated[str, Meta(description="The token's span of the input (the token itself if special).")]
    special: bool
    start: Annotated[int | None, Meta(description="Byte offset of the span in the UTF-8 input; null if special.")]
    stop: Annotated[int | None, Meta(description="Byte offset of the span's end; null if special.")]


class DecodeTEIRequest(msgspec.Struct, kw_only=True):
    ids: Annotated[
        list[TokenId | list[TokenId]],
        Meta(
            min_length=1,
            description="Token ids, or a list of them (a batch).",
            examples=[[101, 7592, 2088, 102]],
            extra_json_schema=one_of(
                {"type": "array", "items": _TOKEN_ID_SCHEMA, "minItems": 1},
                {"type": "array", "items": {"type": "array", "items": _TOKEN_ID_SCHEMA}, "minItems": 1},
            ),
        ),
    ]
    skip_special_tokens: Annotated[bool, Meta(description="Leave the special tokens out of the text.")] = True
    consumer_group: Annotated[str, Meta(description="Slipstream extension: whose tokenizer.")] = DEFAULT_CONSUMER_GROUP


def _simple_tokens(encoding: Encoding, text: str) -> list[SimpleToken]:
    # TEI gives byte offsets into the UTF-8 text; the tokenizer gives character offsets.
    data = np.frombuffer(text.encode("utf-8", errors="surrogatepass"), dtype=np.uint8)
    byte_of_char = np.append(np.flatnonzero((data & 0xC0) != 0x80), data.size).tolist()
    return [
        SimpleToken(id=i, text=token, special=True, start=None, stop=None)
        if special
        else SimpleToken(id=i, text=text[start:stop], special=False, start=byte_of_char[start], stop=byte_of_char[stop])
        for i, token, special, (start, stop) in zip(
            encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets, strict=True
        )
    ]


def _check_batch(group: ConsumerGroup, count: int) -> None:
    if count > group.settings.max_items_per_request:
        raise PayloadTooLarge(
            f"{count} inputs in one request; this consumer group takes at most {group.settings.max_items_per_request}"
        )


@post(
    "/tokenize",
    status_code=200,
    summary="Tokenize texts (text-embeddings-inference)",
    responses=error_specs(400, 401, 404, 413, 422, 503),
)
async def tokenize(request: Request[Any, Any, Any], data: TokenizeTEIRequest) -> list[list[SimpleToken]]:
    """TEI's /tokenize: for each text, its tokens `{id, text, special, start, stop}`, untruncated.

    A list of token lists even for one text, as TEI answers. Takeoff's form is
    `/tokenize/{reader_id}`.
    """
    state = service_state(request)
    group = state.group(data.consumer_group)
    texts = [data.inputs] if isinstance(data.inputs, str) else data.inputs
    _check_batch(group, len(texts))

    def tokenize_all() -> list[list[SimpleToken]]:
        encodings = group.encoder.encode_untruncated(texts, add_special_tokens=data.add_special_tokens)
        return [_simple_tokens(encoding, text) for encoding, text in zip(encodings, texts, strict=True)]

    try:
        return await asyncio.get_running_loop().run_in_executor(state.tokenizer_executor, tokenize_all)
    except Exception as exc:  # the tokenizer refused a text outright
        raise InvalidInput(f"a text could not be tokenized: {exc}") from None


@post(
    "/decode",
    status_code=200,
    summary="Decode token ids (text-embeddings-inference)",
    responses=error_specs(400, 401, 404, 413, 422, 503),
)
async def decode(request: Request[Any, Any, Any], data: DecodeTEIRequest) -> list[str]:
    """TEI's /decode: the text of each id list; ids the vocabulary lacks are left out."""
    state = service_state(request)
    group = state.group(data.consumer_group)
    nested = [isinstance(row, list) for row in data.ids]
    if any(nested) and not all(nested):
        raise InvalidInput("ids: a list of token ids, or a list of such lists; not a mix")
    rows = cast(list[list[int]], data.ids) if all(nested) else [cast(list[int], data.ids)]  # checked just above
    _check_batch(group, len(rows))
    return await asyncio.get_running_loop().run_in_executor(
        state.tokenizer_executor,
        lambda: group.encoder.decode(rows, skip_special_tokens=data.skip_special_tokens),
    )


@route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False, status_code=204)
async def root_options() -> Response[None]:
    """Both methods of `/`: Litestar's own OPTIONS answer for a path lists only the methods of the
    first handler registered there."""
    return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})


# root_options first: a path's OPTIONS handler must be there before its other handlers.
ROUTES = [predict, rerank, root_options, root, root_ready, tokenize, decode]
