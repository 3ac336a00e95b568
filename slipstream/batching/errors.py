"""Errors a client can be told about: each carries its kind and the HTTP-style status it maps to.

The core raises these without knowing about HTTP; a front end turns them into
`{"error": message, "error_type": kind}` with `status`.
"""

from __future__ import annotations


class ServiceError(Exception):
    status: int = 500
    error_type: str = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class NotFound(ServiceError):
    status = 404
    error_type = "not_found"


class UnknownConsumerGroup(NotFound):
    error_type = "unknown_consumer_group"


class Conflict(ServiceError):
    """The request is valid but clashes with what is there (a full server, a group serving other labels)."""

    status = 409
    error_type = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    error_type = "payload_too_large"


class InvalidInput(ServiceError):
    status = 422
    error_type = "validation"


class QueueFull(ServiceError):
    status = 429
    error_type = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class Unavailable(ServiceError):
    """Not ready yet, or shutting down."""

    status = 503
    error_type = "unavailable"


class DeadlineExceeded(ServiceError):
    status = 504
    error_type = "timeout"


class EngineFailure(ServiceError):
    """The engine raised on the batch this request was in; other batches are unaffected."""

    status = 500
    error_type = "engine"


class EngineTimeout(ServiceError):
    """The batch this request was in ran past `batch_timeout_s` (a hung engine) and was given up."""

    status = 504
    error_type = "engine_timeout"
