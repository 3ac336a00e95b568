"""The management app: its own Litestar app and OpenAPI page, on the same state as the inference app."""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from slipstream import __version__
from slipstream.server.auth import api_key_guard
from slipstream.server.errors import EXCEPTION_HANDLERS
from slipstream.server.management.routes import ROUTES
from slipstream.server.state import ServiceState


def create_management_app(state: ServiceState) -> Litestar:
    """The management API over `state`; the inference app's lifespan starts and stops the readers."""
    key = state.settings.management_key
    return Litestar(
        route_handlers=ROUTES,
        guards=[api_key_guard(key)] if key else [],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=state.settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Slipstream management",
            version=__version__,
            description=(
                "Takeoff's management API: list, add, describe and remove readers (loaded models) while "
                'serving, by consumer group. Errors are {"error", "error_type"}.'
            ),
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/")],
        ),
        state=State({"service": state}),
        debug=False,
        logging_config=None,
    )
