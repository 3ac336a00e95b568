"""JSON schema that the msgspec types cannot say by themselves.

Constraints live in the types (msgspec `Meta`), which validate every request,
and each request body's OpenAPI schema is msgspec's own for its type
(`slipstream.server.body`). Only a union msgspec cannot decode directly (two
list types) needs its exact schema written out: it is decoded as a wider type
and checked in the handler, and the schema states the narrow union.
"""

from __future__ import annotations

from typing import Any

INT32_MAX = 2**31 - 1
"""The upper bound of counts and sizes in requests: far above any real value, and within every client's int."""


def one_of(*schemas: dict[str, Any]) -> dict[str, Any]:
    """`Meta(extra_json_schema=...)` replacing a union-typed field's schema by exactly one of `schemas`."""
    return {"oneOf": list(schemas)}
