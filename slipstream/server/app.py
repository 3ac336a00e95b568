"""The Litestar app: the routes of every API family around the consumer groups.

`create_app(settings)` loads the engine of every reader of the configuration
before returning (so a bad artifact fails at start, not on the first request);
warm-up runs in the background after start, and /ready answers 503 until it is
done. The management API (`slipstream.server.management`) is a second app on
the same state.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from slipstream import __version__
from slipstream.batching.group import EngineFactory, load_engine_for
from slipstream.server.api import ROUTES
from slipstream.server.auth import api_key_guard, describe_api_key
from slipstream.server.body import StrictJSONBody, describe_request_bodies
from slipstream.server.errors import EXCEPTION_HANDLERS
from slipstream.server.lifespan import service_lifespan
from slipstream.server.metrics import ServiceMetrics
from slipstream.server.middleware import RequestMetricsMiddleware
from slipstream.server.readers import ReaderRegistry
from slipstream.server.settings import ServiceSettings
from slipstream.server.state import ServiceState


def create_app(settings: ServiceSettings, *, engine_factory: EngineFactory = load_engine_for) -> Litestar:
    """The app with the configuration's readers loaded (engines built); warm-up starts with the app."""
    metrics = ServiceMetrics()
    tokenizer_executor = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="tokenizer")
    readers = ReaderRegistry(settings, metrics, tokenizer_executor, engine_factory)
    readers.load_configured()
    state = ServiceState(settings, readers, metrics, tokenizer_executor)
    metrics.ready.set_function(lambda: 1.0 if state.ready else 0.0)
    app = Litestar(
        route_handlers=ROUTES,
        lifespan=[service_lifespan(state)],
        guards=[api_key_guard(settings.api_key)] if settings.api_key else [],
        middleware=[RequestMetricsMiddleware(metrics)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        dto=StrictJSONBody,
        return_dto=None,
        openapi_config=OpenAPIConfig(
            title="Slipstream",
            version=__version__,
            description=(
                "Sequence classification and reranking from ONNX Runtime behind a length-bucketed "
                "dynamic batcher. /classify follows Takeoff; /predict, /rerank, POST /, /tokenize and "
                "/decode follow text-embeddings-inference; /v1/rerank and /v2/rerank follow Cohere; "
                '/ping and /invocations follow SageMaker. Errors are {"error", "error_type"}.'
            ),
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/")],
        ),
        debug=False,
        logging_config=None,
    )
    app.state.service = state
    describe_request_bodies(app)
    if settings.api_key:
        describe_api_key(app)
    return app
