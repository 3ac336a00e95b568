"""TitanML Takeoff's inference routes: `/classify` and `/tokenize/{reader_id}`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, post
from msgspec import Meta

from slipstream.batching.errors import InvalidInput
from slipstream.defaults import DEFAULT_CONSUMER_GROUP
from slipstream.server.disconnect import run_unless_disconnected
from slipstream.server.errors import INFERENCE_ERRORS, error_specs
from slipstream.server.inputs import TakeoffTexts, parse_takeoff
from slipstream.server.long_text import LongTextField, ReturnChunksField, requested_chunks
from slipstream.server.middleware import timing_headers
from slipstream.server.scores import activate
from slipstream.server.state import service_state

ActivationChoice = Literal["none", "softmax", "sigmoid", "auto"]
# A deadline longer than an hour is a mistake, not a deadline.
MAX_TIMEOUT_MS = 3_600_000.0


class ClassifyRequest(msgspec.Struct, kw_only=True):
    text: Annotated[
        TakeoffTexts,
        Meta(description="A string, a list of strings (a batch), or a list of [first, second] pairs."),
    ]
    consumer_group: Annotated[str, Meta(description="Which model serves it.")] = DEFAULT_CONSUMER_GROUP
    activation: Annotated[
        ActivationChoice | None,
        Meta(description="Scores: raw logits when absent or none; auto follows the model's problem_type."),
    ] = None
    return_labels: Annotated[bool, Meta(description="Add `labels`: the label name of each score.")] = False
    truncate: Annotated[
        bool | None, Meta(description="false: an over-long input is an error (422) instead of being truncated.")
    ] = None
    timeout_ms: Annotated[
        Annotated[float, Meta(gt=0, le=MAX_TIMEOUT_MS)] | None,
        Meta(description="Deadline in milliseconds: 504 if the work has not started within it."),
    ] = None
    long_text: LongTextField = None
    return_chunks: ReturnChunksField = False


class ClassifyResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    result: Annotated[
        list[float | list[float]],
        Meta(description="One score list (one score per label) for a string input; a list of them for a list."),
    ]
    labels: Annotated[list[str] | None, Meta(description="Label names, in score order (return_labels).")] = None
    chunks: Annotated[
        int | list[int] | None,
        Meta(description="return_chunks: the windows each input took, shaped like `result`'s inputs."),
    ] = None
    best_chunk: Annotated[
        list[int | list[int]] | None,
        Meta(description="return_chunks, max aggregation: per input and label, the window that gave the score."),
    ] = None


class TokenizeRequest(msgspec.Struct, kw_only=True):
    text: str
    use_chat_template: Annotated[bool, Meta(description="Accepted for Takeoff clients; classifiers have none.")] = True


class TokenizeResponse(msgspec.Struct):
    tokens: list[str]
    tokens_count: int


def _timeout_s(timeout_ms: float | None) -> float | None:
    return None if timeout_ms is None else timeout_ms / 1000.0


@post("/classify", status_code=200, summary="Classify texts or pairs (Takeoff)", responses=INFERENCE_ERRORS)
async def classify(request: Request[Any, Any, Any], data: ClassifyRequest) -> Response[ClassifyResponse]:
    """Scores per label for a string, a list of strings, or a list of [first, second] pairs.

    Raw logits unless `activation` says otherwise, exactly as Takeoff returns them.
    """
    group = service_state(request).group(data.consumer_group)
    parsed = parse_takeoff(data.text)
    scored = await run_unless_disconnected(
        request,
        group.score(
            parsed.items, truncate=data.truncate, long_text=data.long_text, timeout_s=_timeout_s(data.timeout_ms)
        ),
    )
    activation = data.activation or "none"
    scores = activate(scored.logits, group.manifest.activation if activation == "auto" else activation)
    result = scores[0].tolist() if parsed.single else scores.tolist()
    body = ClassifyResponse(result=result, labels=group.manifest.labels if data.return_labels else None)
    chunks = requested_chunks(scored, data.return_chunks)
    if chunks is not None:
        windows, best = chunks.windows.tolist(), None if chunks.best is None else chunks.best.tolist()
        body.chunks = windows[0] if parsed.single else windows
        body.best_chunk = best[0] if parsed.single and best is not None else best
    return Response(body, headers=timing_headers(request, scored))


@post(
    "/tokenize/{reader_id:str}",
    status_code=200,
    summary="Tokenize a text (Takeoff)",
    responses=error_specs(400, 401, 404, 413, 422, 503),
)
async def tokenize(request: Request[Any, Any, Any], reader_id: str, data: TokenizeRequest) -> TokenizeResponse:
    """The model's tokens for `text`, special tokens included; reader ids are listed in /info."""
    state = service_state(request)
    reader = state.reader_model(reader_id)
    loop = asyncio.get_running_loop()
    try:
        tokens = await loop.run_in_executor(state.tokenizer_executor, reader.tokens, data.text)
    except Exception as exc:  # the tokenizer refused this text: this request's failure only
        raise InvalidInput(f"the text could not be tokenized: {exc}") from None
    return TokenizeResponse(tokens=tokens, tokens_count=len(tokens))


ROUTES = [classify, tokenize]
