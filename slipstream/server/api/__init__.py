"""The routes, one module per API family: Takeoff, text-embeddings-inference, Cohere, SageMaker, operations."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from slipstream.server.api import cohere, operations, sagemaker, takeoff, tei

ROUTES: list[ControllerRouterHandler] = [
    *takeoff.ROUTES,
    *tei.ROUTES,
    *cohere.ROUTES,
    *sagemaker.ROUTES,
    *operations.ROUTES,
]
