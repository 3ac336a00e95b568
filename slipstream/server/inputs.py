"""The input forms each API accepts, checked and normalised to a list of items.

An item is a text or a (first, second) pair. Shapes that are wrong (an empty
batch, a pair of three, a mix of texts and pairs in /classify) raise
`InvalidInput` (422) with a message that says what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from slipstream.batching.errors import InvalidInput
from slipstream.batching.tokenization import TextInput

# A text, or a list whose entries are texts or [text, text] pairs. (msgspec
# allows one array type per union, so list-of-texts vs list-of-pairs is told
# apart after decoding, here.)
TextsOrPairs = str | list[str | list[str]]


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
    """TEI /predict: "a"; ["a", "b"] is ONE pair; a batch is [["a"], ["a", "b"], ...]."""
    if isinstance(inputs, str):
        return ParsedInputs([inputs], single=True)
    if not inputs:
        raise InvalidInput("inputs: the list is empty")
    if isinstance(inputs[0], str):
        if not all(isinstance(t, str) for t in inputs) or len(inputs) > 2:
            raise InvalidInput(
                "inputs: a list of strings is one input, a text [a] or a pair [a, b]; "
                "send a batch as [[a], [a, b], ...]"
            )
        texts = cast(list[str], inputs)  # checked just above
        return ParsedInputs([texts[0] if len(texts) == 1 else (texts[0], texts[1])], single=True)
    items: list[TextInput] = []
    for index, value in enumerate(inputs):
        if isinstance(value, str) or len(value) == 1:
            items.append(value if isinstance(value, str) else value[0])
        else:
            items.append(_pair(value, f"inputs[{index}]"))
    return ParsedInputs(items, single=False)
