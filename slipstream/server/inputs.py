"""The input forms each API accepts, checked and normalised to a list of items.

An item is a text or a (first, second) pair. Shapes that are wrong (an empty
batch, a pair of three, a mix of texts and pairs in /classify) raise
`InvalidInput` (422) with a message that says what was expected.

msgspec allows one array type per union, so it decodes the broad shape and the
parsers here decide what a list means; each type carries the exact JSON schema
of what its parser accepts, which is what OpenAPI shows
(tests/server/test_input_parsers.py checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast

from msgspec import Meta

from slipstream.batching.errors import InvalidInput
from slipstream.batching.tokenization import TextInput

# What msgspec decodes: a text, or a list whose entries are texts or lists of texts.
TextsOrPairs = str | list[str | list[str]]

_TEXT: dict[str, Any] = {"type": "string"}
_PAIR: dict[str, Any] = {"type": "array", "items": _TEXT, "minItems": 2, "maxItems": 2}
_TEI_SEQUENCE: dict[str, Any] = {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": 2}

TAKEOFF_TEXT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        _TEXT,
        {"type": "array", "items": _TEXT, "minItems": 1},
        {"type": "array", "items": _PAIR, "minItems": 1},
    ]
}
TEI_INPUTS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        _TEXT,
        _TEI_SEQUENCE,
        {"type": "array", "items": {"anyOf": [_TEXT, _TEI_SEQUENCE]}, "minItems": 1, "contains": {"type": "array"}},
    ]
}
# /classify: a string, a list of strings, or a list of [first, second] pairs.
TakeoffTexts = Annotated[TextsOrPairs, Meta(extra_json_schema=TAKEOFF_TEXT_SCHEMA)]
# /predict: a string; [a] or [a, b] is one input; a batch has at least one list: [[a], [a, b], c].
TeiInputs = Annotated[TextsOrPairs, Meta(extra_json_schema=TEI_INPUTS_SCHEMA)]


@dataclass(frozen=True, slots=True)
class ParsedInputs:
    items: Sequence[TextInput]
    single: bool  # the request was one input: the response is one score list, not a list of them


def _pair(value: list[str], where: str) -> tuple[str, str]:
    if len(value) != 2:
        raise InvalidInput(f"{where}: a pair must be [first, second], got {len(value)} strings")
    return value[0], value[1]


def parse_takeoff(text: str | list[str | list[str]]) -> ParsedInputs:
    """Takeoff /classify: a string, a list of strings, or a list of [a, b] pairs."""
    if isinstance(text, str):
        return ParsedInputs([text], single=True)
    if not text:
        raise InvalidInput("text: the list is empty")
    if isinstance(text[0], str):
        if not all(isinstance(t, str) for t in text):
            raise InvalidInput("text: a list must be all strings or all [first, second] pairs")
        return ParsedInputs(cast(list[str], text), single=False)  # checked just above
    pairs: list[TextInput] = []
    for index, value in enumerate(text):
        if isinstance(value, str):
            raise InvalidInput("text: a list must be all strings or all [first, second] pairs")
        pairs.append(_pair(value, f"text[{index}]"))
    return ParsedInputs(pairs, single=False)


def parse_tei(inputs: str | list[str | list[str]]) -> ParsedInputs:
    """TEI /predict: "a"; ["a"] or ["a", "b"] is ONE input; a batch is [["a"], ["a", "b"], "c", ...]."""
    if isinstance(inputs, str):
        return ParsedInputs([inputs], single=True)
    if not inputs:
        raise InvalidInput("inputs: the list is empty")
    if all(isinstance(t, str) for t in inputs):
        if len(inputs) > 2:
            raise InvalidInput(
                "inputs: a list of strings is one input, a text [a] or a pair [a, b]; "
                "send a batch as [[a], [a, b], ...]"
            )
        texts = cast(list[str], inputs)  # checked just above
        return ParsedInputs([texts[0] if len(texts) == 1 else (texts[0], texts[1])], single=True)
    items: list[TextInput] = []
    for index, value in enumerate(inputs):
        if isinstance(value, str):
            items.append(value)
        elif len(value) == 1:
            items.append(value[0])
        else:
            items.append(_pair(value, f"inputs[{index}]"))
    return ParsedInputs(items, single=False)
