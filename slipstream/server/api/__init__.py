"""The routes, one module per API family: Takeoff, text-embeddings-inference, operations."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from slipstream.server.api import operations, takeoff, tei

ROUTES: list[ControllerRouterHandler] = [*takeoff.ROUTES, *tei.ROUTES, *operations.ROUTES]
