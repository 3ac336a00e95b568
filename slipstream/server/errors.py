"""Every error as JSON `{"error", "error_type"}`: the body, the HTTP-only errors, the handlers.

The core's errors (`slipstream.batching.errors`) carry their own status; the
handlers here turn them, Litestar's own exceptions, and anything unexpected
into the same body, so a client never sees an HTML page or a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap

from slipstream.batching.errors import InvalidInput, ServiceError

log = logging.getLogger("slipstream.server")


class ErrorResponse(msgspec.Struct):
    error: str
    error_type: str


class MalformedRequest(ServiceError):
    status = 400
    error_type = "malformed_request"


class Unauthorized(ServiceError):
    status = 401
    error_type = "unauthorized"


_HTTP_ERROR_TYPES = {
    400: "malformed_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> Response[ErrorResponse]:
    return Response(ErrorResponse(error=message, error_type=error_type), headers=headers, status_code=status)


def _service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[ErrorResponse]:
    return error_response(exc.status, exc.error_type, exc.message, exc.headers)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorResponse]:
    # Litestar raises this both for a body that is not JSON (no field details)
    # and for JSON of the wrong shape (details per field): 400 and 422.
    extra = exc.extra if isinstance(exc.extra, list) else []
    problems = [e for e in extra if isinstance(e, dict) and "message" in e]
    if not problems:
        return error_response(400, MalformedRequest.error_type, f"the body is not valid JSON: {exc.detail}")
    message = "; ".join(f"{p.get('key', 'body')}: {p['message']}" for p in problems)
    return error_response(422, InvalidInput.error_type, message)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    status = exc.status_code
    return error_response(status, _HTTP_ERROR_TYPES.get(status, "http_error"), str(exc.detail), exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    log.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return error_response(500, "internal", f"internal error: {type(exc).__name__}")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ServiceError: _service_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}

_DESCRIPTIONS = {
    400: "the body is not JSON",
    401: "API key missing or wrong",
    404: "unknown consumer group (the known ones are listed) or reader id",
    413: "body, item count or token count over the limits",
    422: "wrong shapes or types; an over-long input with truncate: false",
    429: "queue full; see Retry-After",
    500: "the engine failed on this request's batch (error_type engine)",
    503: "warming up or shutting down",
    504: "the deadline passed before the work started",
}


def error_specs(*statuses: int, descriptions: Mapping[int, str] = _DESCRIPTIONS) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a route can answer (`descriptions`: what each means there)."""
    return {s: ResponseSpec(data_container=ErrorResponse, description=descriptions[s]) for s in statuses}


INFERENCE_ERRORS = error_specs(400, 401, 404, 413, 422, 429, 500, 503, 504)
