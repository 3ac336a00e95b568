"""Bearer-token auth: a Litestar guard on every route not marked public (/health, /ready)."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
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
