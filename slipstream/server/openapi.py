"""What the OpenAPI schema must say that the msgspec types cannot say through Litestar by themselves.

Constraints live in the types (msgspec `Meta`), which validate every request;
these helpers only repeat them where Litestar's schema would drop them, so that
what the schema calls valid is what the server accepts.
"""

from __future__ import annotations

from typing import Any

INT32_MAX = 2**31 - 1
"""The upper bound of counts and sizes in requests: far above any real value, and within every client's int."""


def nullable_integer(minimum: int, maximum: int = INT32_MAX) -> dict[str, Any]:
    """`Meta(extra_json_schema=...)` for `Annotated[int, Meta(ge=minimum, le=maximum)] | None`.

    Litestar renders that union as a bare integer-or-null and drops the bounds.
    """
    return {"extra": {"one_of": [{"type": "integer", "minimum": minimum, "maximum": maximum}, {"type": "null"}]}}


def one_of(*schemas: dict[str, Any]) -> dict[str, Any]:
    """`Meta(extra_json_schema=...)` replacing a field's schema by exactly one of `schemas`.

    For unions msgspec cannot decode directly (two list types), decoded as a wider
    type and checked in the handler: the schema states the narrow union.
    """
    return {"extra": {"type": None, "items": None, "one_of": list(schemas)}}
