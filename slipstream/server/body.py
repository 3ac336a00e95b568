"""Request bodies: decoded strictly by msgspec, and described in OpenAPI by msgspec's own schema.

Litestar converts a decoded body into the handler's struct in lax mode (`0` is
accepted as `false`, `"5"` as `5`) and its OpenAPI generator drops constraints
nested inside unions (a pair's length, a list's minimum). So the schema and the
validation would disagree. Here both come from one place, the msgspec type:

- `StrictJSONBody` (set as the app's DTO) decodes each body from its bytes in
  one strict pass with a decoder per route, built at start-up;
- `describe_request_bodies` replaces the OpenAPI component of every body type
  with the JSON schema msgspec derives from that same type.
"""

from __future__ import annotations

import typing
from collections.abc import Generator, Iterable
from typing import Any, ClassVar, TypeVar

import msgspec
from litestar import Litestar
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition

from slipstream.batching.errors import InvalidInput
from slipstream.server.errors import MalformedRequest

T = TypeVar("T")

# Where OpenAPI keeps named schemas; msgspec writes its references to match.
_COMPONENTS = "#/components/schemas/{name}"


class StrictJSONBody(AbstractDTO[Any]):
    """The `data` of every route, decoded from JSON bytes by msgspec in strict mode."""

    _decoders: ClassVar[dict[str, msgspec.json.Decoder[Any]]] = {}
    # The same by route handler, found faster (Litestar builds `handler_id` anew at every access);
    # holding the handler keeps its id from being reused by another.
    _by_handler: ClassVar[dict[int, tuple[object, msgspec.json.Decoder[Any]]]] = {}

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        if field_definition.name == "data":
            cls._decoders[handler_id] = msgspec.json.Decoder(field_definition.annotation)

    @classmethod
    def is_supported_model_type_field(cls, field_definition: FieldDefinition) -> bool:
        return False  # responses are Litestar's to encode, as usual

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        schema: Reference | Schema = schema_creator.for_field_definition(field_definition)
        return schema

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()  # no transfer model: the body decodes straight into the handler's type

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    def decode_bytes(self, value: bytes) -> Any:
        handler = self.asgi_connection.route_handler
        found = self._by_handler.get(id(handler))
        if found is None:
            found = self._by_handler[id(handler)] = (handler, self._decoders[handler.handler_id])
        return decode_body(found[1], value)

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        raise MalformedRequest("the body must be JSON")  # form-encoded bodies are not accepted


def decode_body(decoder: msgspec.json.Decoder[Any], value: bytes) -> Any:
    """`value` decoded by `decoder`, strictly; 400 for a body that is not JSON, 422 for the wrong shape.

    JSON Schema counts 3.0 as an integer, msgspec's strict int does not: a body
    refused only for that is decoded again with its whole floats read as ints.
    A body the first pass accepts (every valid one without such numbers) pays
    nothing for it.
    """
    try:
        return decoder.decode(value)
    except msgspec.ValidationError as exc:  # JSON, but not the shape the route takes
        try:
            return msgspec.convert(_whole_floats_as_ints(msgspec.json.decode(value), _MAX_DEPTH), decoder.type)
        except (msgspec.DecodeError, _TooDeep, RecursionError):  # not JSON after all, or nested too deep
            raise InvalidInput(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None


def convert_body(raw: Any, shape: type[T]) -> T:
    """`raw`, a decoded JSON body, converted to `shape` strictly, whole floats counting as integers as in
    `decode_body`; raises the first pass's `msgspec.ValidationError` when neither pass fits."""
    try:
        return msgspec.convert(raw, shape)
    except msgspec.ValidationError as exc:
        try:
            return msgspec.convert(_whole_floats_as_ints(raw, _MAX_DEPTH), shape)
        except (msgspec.ValidationError, _TooDeep, RecursionError):
            raise exc from None


# Deeper than any body type nests (an object, a list, a pair, a number).
_MAX_DEPTH = 8


class _TooDeep(Exception):
    pass


def _whole_floats_as_ints(value: Any, depth: int) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, list | dict):
        if depth == 0:
            raise _TooDeep
        if isinstance(value, list):
            return [_whole_floats_as_ints(item, depth - 1) for item in value]
        return {key: _whole_floats_as_ints(item, depth - 1) for key, item in value.items()}
    return value


def body_types(app: Litestar) -> list[type[msgspec.Struct]]:
    """The struct types of every route's request body."""
    found: dict[str, type[msgspec.Struct]] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None and isinstance(data.annotation, type) and issubclass(data.annotation, msgspec.Struct):
                found[data.annotation.__name__] = data.annotation
    return list(found.values())


def schema_components(
    types: Iterable[type[msgspec.Struct]], ref_template: str = _COMPONENTS
) -> dict[str, dict[str, Any]]:
    """msgspec's JSON schema of each type (and of the types they use), by name.

    msgspec leaves out an `extra_json_schema` set on a union-typed field; such a
    field's exact schema is applied here, so a shape msgspec cannot express as a
    type (which lists mean one input) is still described exactly.
    """
    types = list(types)
    _, components = msgspec.json.schema_components(types, ref_template=ref_template)
    for struct_type in types:
        properties = components[struct_type.__name__].get("properties", {})
        for name, annotation in typing.get_type_hints(struct_type, include_extras=True).items():
            for meta in getattr(annotation, "__metadata__", ()):
                if isinstance(meta, msgspec.Meta) and meta.extra_json_schema and name in properties:
                    # The exact union replaces msgspec's wider one; description and default stay.
                    wider = ("anyOf", "oneOf", "type", "items")
                    kept = {k: v for k, v in properties[name].items() if k not in wider}
                    properties[name] = {**kept, **meta.extra_json_schema}
    return components


def describe_request_bodies(app: Litestar) -> None:
    """Replace the OpenAPI schema of each request body type with the one msgspec derives from it."""
    # A plain mapping is written out as it is (its keys are already JSON Schema's).
    app.openapi_schema.components.schemas.update(schema_components(body_types(app)))  # type: ignore[arg-type]
