"""Cohere's rerank API: `POST /v1/rerank` and `POST /v2/rerank`.

What the cohere SDK (`Client.rerank`, `ClientV2.rerank`) and the Cohere
rerankers of LangChain and LlamaIndex send. `model` names the consumer group
(absent: the default group); `relevance_score` is the sigmoid of a one-label
model's logit, as Cohere's is a probability; results come best first. Ranking
is shared with TEI's `/rerank` (`slipstream.server.ranking`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, post
from msgspec import Meta

from slipstream.batching.consumer_group import ConsumerGroup
from slipstream.batching.errors import InvalidInput, UnknownConsumerGroup
from slipstream.defaults import DEFAULT_CONSUMER_GROUP
from slipstream.server.errors import INFERENCE_ERRORS
from slipstream.server.long_text import LongTextField, ReturnChunksField
from slipstream.server.middleware import timing_headers
from slipstream.server.openapi import INT32_MAX
from slipstream.server.ranking import Ranking, rank, require_one_label
from slipstream.server.state import service_state

_QUERY_EXAMPLE = "What is the capital of the United States?"
_DOCUMENTS_EXAMPLE = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
]


class RerankOptions(msgspec.Struct, kw_only=True):
    """The fields both versions take (options shared by every Cohere route belong here)."""

    model: Annotated[
        str | None,
        Meta(
            description="The consumer group that ranks (listed in /info); absent: the default group.",
            examples=["primary"],
        ),
    ] = None
    query: Annotated[str, Meta(description="The query, the first text of every pair.", examples=[_QUERY_EXAMPLE])]
    top_n: Annotated[
        Annotated[int, Meta(ge=0, le=INT32_MAX)] | None,
        Meta(
            description="Return only the best n; all of them when absent, 0, or more than there are documents.",
            examples=[3],
        ),
    ] = None
    # Slipstream extensions, as on TEI's /rerank (Cohere's own API has no such fields).
    long_text: LongTextField = None
    return_chunks: ReturnChunksField = False


class CohereDocument(msgspec.Struct):
    text: Annotated[str, Meta(description="The text ranked (other keys of the object are ignored).")]


class CohereRerankRequest(RerankOptions, kw_only=True):
    documents: Annotated[
        list[str | CohereDocument],
        Meta(min_length=1, description='Texts, or `{"text": ...}` objects.', examples=[_DOCUMENTS_EXAMPLE]),
    ]
    return_documents: Annotated[bool, Meta(description='Add each result\'s `document`: `{"text": ...}`.')] = False
    rank_fields: Annotated[
        list[Literal["text"]] | None, Meta(description='Documents are ranked by their text: only `["text"]`.')
    ] = None
    max_chunks_per_doc: Annotated[
        Annotated[int, Meta(ge=1, le=INT32_MAX)] | None,
        Meta(
            description=(
                "Accepted for Cohere clients; what a document longer than the model's window gets is `long_text`'s "
                "(truncated by default), and with chunk the group's max_chunks_per_input bounds its windows."
            ),
        ),
    ] = None


class CohereV2RerankRequest(RerankOptions, kw_only=True):
    documents: Annotated[list[str], Meta(min_length=1, description="Texts.", examples=[_DOCUMENTS_EXAMPLE])]
    max_tokens_per_doc: Annotated[
        Annotated[int, Meta(ge=1, le=INT32_MAX)] | None,
        Meta(
            description=(
                "Cut each document to its first n tokens before pairing it with the query; absent: a pair "
                "longer than the model's window is cut to it (the document's end goes first), or with long_text "
                "chunk scored in windows."
            ),
            examples=[512],
        ),
    ] = None
    priority: Annotated[
        Annotated[int, Meta(ge=0, le=INT32_MAX)] | None,
        Meta(
            description="Accepted for Cohere clients; requests are served in arrival order.",
        ),
    ] = None


class CohereResultDocument(msgspec.Struct):
    text: str


class CohereRerankResult(msgspec.Struct, omit_defaults=True):
    index: Annotated[int, Meta(description="The document's position in the request.", examples=[1])]
    relevance_score: Annotated[
        float, Meta(description="The sigmoid of the model's logit: a probability.", examples=[0.9862])
    ]
    document: Annotated[CohereResultDocument | None, Meta(description="The document (v1, with return_documents).")] = (
        None
    )
    chunks: Annotated[int | None, Meta(description="return_chunks: the windows this document took.")] = None
    best_chunk: Annotated[
        int | None, Meta(description="return_chunks, max aggregation: the window that gave its score.")
    ] = None


class CohereApiVersion(msgspec.Struct):
    version: Annotated[str, Meta(examples=["2"])]


class CohereBilledUnits(msgspec.Struct):
    search_units: Annotated[int, Meta(description="One per 100 documents or part of 100.", examples=[1])]


class CohereMeta(msgspec.Struct):
    api_version: CohereApiVersion
    billed_units: CohereBilledUnits


class CohereRerankResponse(msgspec.Struct):
    id: Annotated[str, Meta(description="A new UUID per response.", examples=["1b0a4d6e-3b64-4c55-9a1b-44f1a5e0f2a7"])]
    results: Annotated[list[CohereRerankResult], Meta(description="Best first.")]
    meta: CohereMeta


def _group_for(request: Request[Any, Any, Any], model: str | None) -> ConsumerGroup:
    state = service_state(request)
    name = DEFAULT_CONSUMER_GROUP if model is None else model
    if name not in state.readers.group_names():
        raise UnknownConsumerGroup(
            f"unknown model {name!r}: `model` names a consumer group, and this server has {state.readers.group_names()}"
        )
    return state.group(name)


async def _ranked(
    request: Request[Any, Any, Any], data: RerankOptions, texts: list[str], *, max_tokens_per_doc: int | None = None
) -> Ranking:
    group = _group_for(request, data.model)
    require_one_label(group)
    if max_tokens_per_doc is not None and max_tokens_per_doc < group.manifest.max_sequence_length:
        executor = service_state(request).tokenizer_executor
        try:
            texts = await asyncio.get_running_loop().run_in_executor(
                executor, group.encoder.cut_to_tokens, texts, max_tokens_per_doc
            )
        except Exception as exc:  # the tokenizer refused a document outright
            raise InvalidInput(f"a document could not be tokenized: {exc}") from None
    return await rank(request, group, data.query, texts, top_n=data.top_n or None, long_text=data.long_text)


def _response(
    request: Request[Any, Any, Any],
    ranking: Ranking,
    data: RerankOptions,
    version: str,
    count: int,
    documents: list[str] | None,
) -> Response[CohereRerankResponse]:
    results = [
        CohereRerankResult(
            index=index,
            relevance_score=score,
            document=None if documents is None else CohereResultDocument(documents[index]),
            chunks=windows,
            best_chunk=best,
        )
        for index, score, (windows, best) in zip(
            ranking.indices, ranking.scores, ranking.reported_chunks(data.return_chunks), strict=True
        )
    ]
    meta = CohereMeta(CohereApiVersion(version), CohereBilledUnits(search_units=-(-count // 100)))
    body = CohereRerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)
    return Response(body, headers=timing_headers(request, ranking.scored))


@post("/v1/rerank", status_code=200, summary="Rerank documents for a query (Cohere v1)", responses=INFERENCE_ERRORS)
async def rerank_v1(request: Request[Any, Any, Any], data: CohereRerankRequest) -> Response[CohereRerankResponse]:
    """Cohere's v1 rerank: documents as texts or `{"text"}` objects, best first; `return_documents` echoes them."""
    texts = [document if isinstance(document, str) else document.text for document in data.documents]
    ranking = await _ranked(request, data, texts)
    return _response(request, ranking, data, "1", len(texts), texts if data.return_documents else None)


@post("/v2/rerank", status_code=200, summary="Rerank documents for a query (Cohere v2)", responses=INFERENCE_ERRORS)
async def rerank_v2(request: Request[Any, Any, Any], data: CohereV2RerankRequest) -> Response[CohereRerankResponse]:
    """Cohere's v2 rerank: documents as texts, best first; `max_tokens_per_doc` cuts each document."""
    ranking = await _ranked(request, data, data.documents, max_tokens_per_doc=data.max_tokens_per_doc)
    return _response(request, ranking, data, "2", len(data.documents), None)


ROUTES = [rerank_v1, rerank_v2]
