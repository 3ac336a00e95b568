"""Bearer-token auth: a Litestar guard on every route not marked public (/health, /ready)."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme
from litestar.types import Guard

from slipstream.server.errors import Unauthorized


def api_key_guard(api_key: str) -> Guard:
    expected = f"Bearer {api_key}".encode()

    def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get("public"):
            return
        given = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("missing or wrong API key: send `Authorization: Bearer <key>`")

    return require_api_key


SCHEME = "bearer"


def describe_api_key(app: Litestar) -> None:
    """Say in the OpenAPI schema which operations need the bearer key (all but the public ones)."""
    openapi = app.openapi_schema
    components = openapi.components
    components.security_schemes = {
        **(components.security_schemes or {}),
        SCHEME: SecurityScheme(type="http", scheme="bearer"),
    }
    for route in app.routes:
        path_item = (openapi.paths or {}).get(route.path_format or "/")
        if path_item is None:
            continue
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or handler.opt.get("public"):
                continue
            for method in handler.http_methods:
                operation = getattr(path_item, method.lower(), None)
                if operation is not None:
                    operation.security = [{SCHEME: []}]
