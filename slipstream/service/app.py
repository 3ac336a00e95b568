"""The Litestar app: routes, errors, auth and metrics around the consumer groups.

`create_app(settings)` loads every group's engine before returning (so a bad
artifact fails at start, not on the first request); warm-up runs in the
background after start, and /ready answers 503 until it is done.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec
import numpy as np
from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST

from slipstream import __version__
from slipstream.service.config import ServiceSettings
from slipstream.service.errors import (
    InvalidInput,
    MalformedRequest,
    NotFound,
    ServiceError,
    Unauthorized,
    Unavailable,
    UnknownConsumerGroup,
)
from slipstream.service.groups import EngineFactory, ModelGroup, Scored, load_engine_for
from slipstream.service.inputs import parse_takeoff, parse_tei
from slipstream.service.metrics import ServiceMetrics
from slipstream.service.schemas import (
    BatchingInfo,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    GroupInfo,
    HealthResponse,
    InfoResponse,
    Prediction,
    PredictRequest,
    Rank,
    ReadyResponse,
    RerankRequest,
    TokenizeRequest,
    TokenizeResponse,
)

log = logging.getLogger("slipstream.service")
T = TypeVar("T")
JSON = "application/json"
START_KEY = "slipstream.start"
KNOWN_ROUTES = frozenset({"/classify", "/predict", "/rerank", "/health", "/ready", "/info", "/metrics"})


class ClientDisconnected(ServiceError):
    status = 499
    error_type = "client_disconnected"


class ServiceState:
    """Everything the handlers share; lives in `app.state.service`."""

    def __init__(self, settings: ServiceSettings, groups: dict[str, ModelGroup], metrics: ServiceMetrics,
                 tokenizer_executor: ThreadPoolExecutor) -> None:
        self.settings = settings
        self.groups = groups
        self.metrics = metrics
        self.tokenizer_executor = tokenizer_executor
        self.readers = {group.reader_id: group for group in groups.values()}
        self.shutting_down = False
        self.warmup_task: asyncio.Task[None] | None = None
        self.warmup_error: str | None = None

    @property
    def ready(self) -> bool:
        return not self.shutting_down and all(group.ready for group in self.groups.values())

    def group(self, name: str) -> ModelGroup:
        group = self.groups.get(name)
        if group is None:
            raise UnknownConsumerGroup(f"unknown consumer_group {name!r}; this server has {sorted(self.groups)}")
        if self.shutting_down:
            raise Unavailable("the service is shutting down")
        if not group.ready:
            raise Unavailable(self.warmup_error or f"consumer group {name!r} is still warming up")
        return group

    def begin_shutdown(self) -> None:
        """Stop admitting work (503); what is queued still runs.

        Called from the signal handler, so it only sets flags (no locks).
        """
        self.shutting_down = True
        for group in self.groups.values():
            group.batcher.stop_admitting()


def _state(request: Request[Any, Any, Any]) -> ServiceState:
    return request.app.state.service  # type: ignore[no-any-return]


# -- scores ------------------------------------------------------------------

def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    # The tanh form cannot overflow for large negative logits, unlike 1 / (1 + exp(-x)).
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    if activation == "softmax":
        return softmax(logits)
    if activation == "sigmoid":
        return sigmoid(logits)
    return logits


def tei_activation(num_labels: int) -> str:
    """TEI's rule when raw_scores is false: sigmoid for one label, softmax otherwise."""
    return "sigmoid" if num_labels == 1 else "softmax"


# -- request plumbing --------------------------------------------------------

async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_unless_disconnected(request: Request[Any, Any, Any], work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, cancelling it (and so dropping its queued items) if the client goes away."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    disconnected = False

    def on_disconnect(done: asyncio.Future[None]) -> None:
        nonlocal disconnected
        if not done.cancelled() and done.exception() is None:
            disconnected = True
            task.cancel()

    watcher.add_done_callback(on_disconnect)
    try:
        return await work
    except asyncio.CancelledError:
        if disconnected:
            task.uncancel()
            raise ClientDisconnected("the client disconnected") from None
        raise
    finally:
        watcher.remove_done_callback(on_disconnect)
        watcher.cancel()


def _timing_headers(request: Request[Any, Any, Any], scored: Scored) -> dict[str, str]:
    """Per-response timing (milliseconds), named as TEI names them."""
    started = request.scope.get(START_KEY)  # type: ignore[call-overload]
    total = (time.perf_counter() - started) * 1000 if started else 0.0
    return {
        "x-total-time": f"{total:.3f}",
        "x-tokenization-time": f"{scored.tokenization_s * 1000:.3f}",
        "x-queue-time": f"{scored.queue_s * 1000:.3f}",
        "x-inference-time": f"{scored.inference_s * 1000:.3f}",
    }


def _timeout_s(timeout_ms: float | None) -> float | None:
    if timeout_ms is None:
        return None
    if not timeout_ms > 0:
        raise InvalidInput("timeout_ms must be positive")
    return timeout_ms / 1000.0


def _json(body: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(body), media_type=JSON, headers=headers, status_code=status)


# -- routes ------------------------------------------------------------------

def _error_specs(*statuses: int) -> dict[int, ResponseSpec]:
    descriptions = {
        400: "the body is not JSON", 401: "API key missing or wrong",
        404: "unknown consumer group (the known ones are listed) or reader id",
        413: "body, item count or token count over the limits",
        422: "wrong shapes or types; an over-long input with truncate: false",
        429: "queue full; see Retry-After", 503: "warming up or shutting down",
        504: "the deadline passed before the work started",
        500: "the engine failed on this request's batch (error_type engine)",
    }
    return {s: ResponseSpec(data_container=ErrorResponse, description=descriptions[s]) for s in statuses}


INFERENCE_ERRORS = _error_specs(400, 401, 404, 413, 422, 429, 500, 503, 504)


@post("/classify", status_code=200, summary="Classify texts or pairs (Takeoff)", responses=INFERENCE_ERRORS)
async def classify(request: Request[Any, Any, Any], data: ClassifyRequest) -> Response[ClassifyResponse]:
    """Scores per label for a string, a list of strings, or a list of [first, second] pairs.

    Raw logits unless `activation` says otherwise, exactly as Takeoff returns them.
    """
    state = _state(request)
    group = state.group(data.consumer_group)
    parsed = parse_takeoff(data.text)
    scored = await run_unless_disconnected(
        request, group.score(parsed.items, truncate=data.truncate, timeout_s=_timeout_s(data.timeout_ms))
    )
    activation = data.activation or "none"
    if activation == "auto":
        activation = group.manifest.activation
    scores = activate(scored.logits, activation)
    result = scores[0].tolist() if parsed.single else scores.tolist()
    body = ClassifyResponse(result=result, labels=group.manifest.labels if data.return_labels else None)
    return _json(body, _timing_headers(request, scored))  # type: ignore[return-value]


def _direction(value: str) -> str:
    return value.lower()


@post("/predict", status_code=200, summary="Predict (text-embeddings-inference)", responses=INFERENCE_ERRORS)
async def predict(request: Request[Any, Any, Any], data: PredictRequest) -> Response[list[Prediction]]:
    """TEI's /predict: `[{"score", "label"}]` sorted by score, or a list of those for a batch.

    Note: TEI reads `["a", "b"]` as ONE pair; a batch is `[["a"], ["b"]]`.
    """
    state = _state(request)
    group = state.group(data.consumer_group)
    parsed = parse_tei(data.inputs)
    scored = await run_unless_disconnected(
        request,
        group.score(parsed.items, truncate=data.truncate, direction=_direction(data.truncation_direction)),  # type: ignore[arg-type]
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
    return _json(body, _timing_headers(request, scored))  # type: ignore[return-value]


@post("/rerank", status_code=200, summary="Rerank documents for a query (text-embeddings-inference)",
      responses=INFERENCE_ERRORS)
async def rerank(request: Request[Any, Any, Any], data: RerankRequest) -> Response[list[Rank]]:
    """TEI's /rerank: `[{"index", "score", "text"?}]`, best first; `top_n` keeps the best n."""
    state = _state(request)
    group = state.group(data.consumer_group)
    if group.manifest.num_labels != 1:
        raise InvalidInput(
            f"consumer group {group.name!r} has {group.manifest.num_labels} labels; /rerank needs a "
            "one-label (cross-encoder) model; use /predict or /classify"
        )
    if not data.texts:
        raise InvalidInput("texts: the list is empty")
    if data.top_n is not None and data.top_n < 1:
        raise InvalidInput("top_n must be at least 1")
    pairs = [(data.query, text) for text in data.texts]
    scored = await run_unless_disconnected(
        request,
        group.score(pairs, truncate=data.truncate, direction=_direction(data.truncation_direction)),  # type: ignore[arg-type]
    )
    scores = scored.logits[:, 0] if data.raw_scores else sigmoid(scored.logits[:, 0])
    order = np.argsort(-scores, kind="stable")
    if data.top_n is not None:
        order = order[: data.top_n]
    values = scores[order].tolist()
    indices = order.tolist()
    ranks = [
        Rank(index=i, score=s, text=data.texts[i] if data.return_text else None)
        for i, s in zip(indices, values, strict=True)
    ]
    return _json(ranks, _timing_headers(request, scored))  # type: ignore[return-value]


@post("/tokenize/{reader_id:str}", status_code=200, summary="Tokenize a text (Takeoff)",
      responses=_error_specs(400, 401, 404, 413, 422))
async def tokenize(request: Request[Any, Any, Any], reader_id: str, data: TokenizeRequest) -> TokenizeResponse:
    """The model's tokens for `text`, special tokens included; reader ids are listed in /info."""
    state = _state(request)
    group = state.readers.get(reader_id)
    if group is None:
        raise NotFound(f"unknown reader_id {reader_id!r}; this server has {sorted(state.readers)}")
    loop = asyncio.get_running_loop()
    tokens = await loop.run_in_executor(state.tokenizer_executor, group.tokens, data.text)
    return TokenizeResponse(tokens=tokens, tokens_count=len(tokens))


@get("/health", summary="Alive", opt={"public": True})
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@get("/ready", summary="Ready: every group warmed up every bucket (503 until then)",
     opt={"public": True}, responses=_error_specs(503))
async def ready(request: Request[Any, Any, Any]) -> Response[ReadyResponse]:
    state = _state(request)
    groups = {name: group.ready for name, group in state.groups.items()}
    if state.ready:
        return _json(ReadyResponse(ready=True, groups=groups))  # type: ignore[return-value]
    reason = "shutting down" if state.shutting_down else (state.warmup_error or "warming up")
    return _json(ErrorResponse(error=f"not ready: {reason}", error_type="unavailable"), status=503)  # type: ignore[return-value]


@get("/info", summary="Models, labels, devices and batching per consumer group")
async def info(request: Request[Any, Any, Any]) -> InfoResponse:
    state = _state(request)
    return InfoResponse(version=__version__, groups={name: group_info(g) for name, g in state.groups.items()})


def group_info(group: ModelGroup) -> GroupInfo:
    manifest, description, settings = group.manifest, group.description, group.settings
    return GroupInfo(
        consumer_group=group.name,
        reader_id=group.reader_id,
        model=manifest.source.model,
        architecture=manifest.architecture,
        labels=manifest.labels,
        num_labels=manifest.num_labels,
        problem_type=manifest.problem_type,
        activation=manifest.activation,
        max_sequence_length=manifest.max_sequence_length,
        variant=description.variant,
        device=description.device,
        providers=description.providers,
        engine_options=description.options,
        batching=BatchingInfo(
            buckets=group.edges,
            max_batch_size=group.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            batch_duration_millis=settings.batch_duration_millis,
            max_queue_tokens=settings.max_queue_tokens,
            max_items_per_request=settings.max_items_per_request,
            pad_to=group.pad_to,
            truncate=settings.truncate,
        ),
        ready=group.ready,
        versions={"slipstream": __version__, **manifest.versions},
    )


@get("/metrics", summary="Prometheus metrics")
async def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


# -- errors, auth, request metrics --------------------------------------------

_HTTP_ERROR_TYPES = {400: "malformed_request", 401: "unauthorized", 404: "not_found",
                     405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    return _json(ErrorResponse(error=message, error_type=error_type), headers=headers, status=status)


def handle_service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[bytes]:
    return _error(exc.status, exc.error_type, exc.message, exc.headers)


def handle_validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    # Litestar raises this both for a body that is not JSON (no field details)
    # and for JSON of the wrong shape (details per field): 400 and 422.
    extra = exc.extra if isinstance(exc.extra, list) else []
    problems = [e for e in extra if isinstance(e, dict) and "message" in e]
    if not problems:
        return _error(400, MalformedRequest.error_type, f"the body is not valid JSON: {exc.detail}")
    message = "; ".join(f"{p.get('key', 'body')}: {p['message']}" for p in problems)
    return _error(422, InvalidInput.error_type, message)


def handle_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    return _error(status, _HTTP_ERROR_TYPES.get(status, "http_error"), str(exc.detail), exc.headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return _error(500, "internal", f"internal error: {type(exc).__name__}")


def make_auth_guard(api_key: str) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    expected = f"Bearer {api_key}".encode()

    def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get("public"):
            return
        given = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("missing or wrong API key: send `Authorization: Bearer <key>`")

    return require_api_key


def _route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    if path.startswith("/tokenize/"):
        return "/tokenize/{reader_id}"
    if path.startswith("/docs"):
        return "/docs"
    return "other"


def request_metrics_middleware(metrics: ServiceMetrics) -> Callable[[ASGIApp], ASGIApp]:
    """Counts requests by route and status and times them; stamps the start for x-total-time."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            scope[START_KEY] = started  # type: ignore[literal-required]
            status = 500

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                route = _route_label(scope["path"])
                metrics.requests.labels(route, str(status)).inc()
                metrics.request_latency.labels(route).observe(time.perf_counter() - started)

        return wrapped

    return middleware


# -- lifecycle ---------------------------------------------------------------

async def _warm_up(state: ServiceState) -> None:
    for group in state.groups.values():
        try:
            started = time.perf_counter()
            await group.warmup()
            log.info("group %s warmed up %d shapes in %.1f s", group.name, len(group.warmup_shapes()),
                     time.perf_counter() - started)
        except Exception as exc:  # stays not-ready, and says why
            state.warmup_error = f"warm-up of group {group.name!r} failed: {exc}"
            log.error(state.warmup_error)
            return
    if state.ready:
        log.info("ready: %s", ", ".join(f"{g.name} ({g.description.device}, {g.description.variant})"
                                        for g in state.groups.values()))


def load_groups(settings: ServiceSettings, metrics: ServiceMetrics, tokenizer_executor: ThreadPoolExecutor,
                engine_factory: EngineFactory = load_engine_for) -> dict[str, ModelGroup]:
    return {
        name: ModelGroup.load(name, group_settings, tokenizer_executor=tokenizer_executor,
                              metrics=metrics.group(name), engine_factory=engine_factory,
                              inline_tokenize_chars=settings.inline_tokenize_chars)
        for name, group_settings in settings.groups.items()
    }


def create_app(settings: ServiceSettings, *, engine_factory: EngineFactory = load_engine_for) -> Litestar:
    """The app with every group loaded (engines built); warm-up starts with the app."""
    metrics = ServiceMetrics()
    tokenizer_executor = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="tokenizer")
    groups = load_groups(settings, metrics, tokenizer_executor, engine_factory)
    state = ServiceState(settings, groups, metrics, tokenizer_executor)
    metrics.ready.set_function(lambda: 1.0 if state.ready else 0.0)

    async def on_startup(app: Litestar) -> None:
        for group in groups.values():
            await group.start()
        state.warmup_task = asyncio.get_running_loop().create_task(_warm_up(state))

    async def on_shutdown(app: Litestar) -> None:
        state.begin_shutdown()
        if state.warmup_task is not None and not state.warmup_task.done():
            state.warmup_task.cancel()
        await asyncio.gather(*(g.batcher.close(settings.shutdown_timeout_s) for g in groups.values()))
        tokenizer_executor.shutdown(wait=False, cancel_futures=True)

    app = Litestar(
        route_handlers=[classify, predict, rerank, tokenize, health, ready, info, metrics_route],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        guards=[make_auth_guard(settings.api_key)] if settings.api_key else [],
        middleware=[request_metrics_middleware(metrics)],
        exception_handlers={
            ServiceError: handle_service_error,
            ValidationException: handle_validation_error,
            HTTPException: handle_http_error,
            Exception: handle_unexpected,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Slipstream",
            version=__version__,
            description=(
                "Sequence classification and reranking from ONNX Runtime behind a length-bucketed "
                "dynamic batcher. /classify follows Takeoff; /predict and /rerank follow "
                "text-embeddings-inference. Errors are {\"error\", \"error_type\"}."
            ),
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/")],
        ),
        debug=False,
        logging_config=None,
    )
    app.state.service = state
    return app

