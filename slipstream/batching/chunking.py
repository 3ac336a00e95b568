"""Long inputs as overlapping windows, and the windows' logits back to one row per input.

`long_text: "chunk"` scores an input longer than the model's window as several
windows instead of cutting it. Each text is tokenized once, without special
tokens; windows are then cut from its token ids by offset and wrapped in the
model's own special tokens (learned from its tokenizer, `SpecialTokens`), all
in numpy, so a boundary loses or repeats no token beyond the stated overlap.
For a pair only the second text (the document, the hypothesis) is windowed;
the first (the query, the premise) is whole in every window.

Why not the tokenizer's own overflow (truncation with a stride)? It takes one
stride per tokenizer, so it cannot shrink the overlap for a pair whose first
text leaves little room; it panics (a `BaseException`, failing every request
coalesced into the same `encode_batch`) when that room is not more than the
stride; and it builds every window's `Encoding` before the windows can be
counted against `max_chunks_per_input`.
See docs/design-notes.md#long-inputs-windowed-in-numpy.

The windows of an input are consecutive items of one `EncodedItems`; the
batcher queues, batches, counts and drops them like any other items, and
`aggregate` folds their logits back per input (`max`, MaxP in retrieval
research, or `mean`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from slipstream.batching.errors import InvalidInput

LongText = Literal["truncate", "reject", "chunk"]
ChunkAggregate = Literal["max", "mean"]
Ids = npt.NDArray[np.int64]
Logits = npt.NDArray[np.float32]


class FirstTextTooLong(ValueError):
    """A pair's first text alone fills the model's window: no room is left to window the second."""


class TooManyWindows(ValueError):
    """An input needs more windows than `max_chunks_per_input` allows."""


def resolve_long_text(long_text: LongText | None, truncate: bool | None, default: LongText) -> LongText:
    """A request's mode: its `long_text`, else its `truncate` (true: truncate, false: reject), else the default.

    Only a real contradiction is refused: `chunk` neither cuts nor refuses an
    input, so it agrees with either `truncate`.
    """
    if long_text is None:
        return default if truncate is None else ("truncate" if truncate else "reject")
    if truncate is not None and long_text != "chunk" and truncate != (long_text == "truncate"):
        raise InvalidInput(f'long_text "{long_text}" contradicts truncate: {str(truncate).lower()}; send one of them')
    return long_text


@dataclass(frozen=True, slots=True)
class Template:
    """Where a model's tokenizer puts its special tokens around one or two texts.

    `literals[j]` are the special tokens before text j (the last entry: after
    the last text); `text_types[j]` is the token type of every token of text j.
    """

    literal_ids: tuple[Ids, ...]
    literal_types: tuple[Ids, ...]
    text_types: tuple[int, ...]

    @property
    def special_count(self) -> int:
        return sum(int(piece.size) for piece in self.literal_ids)

    def assemble(self, texts: Sequence[Ids]) -> tuple[Ids, Ids]:
        """The ids and token types of whole texts wrapped in the special tokens (to check a template)."""
        ids: list[Ids] = [self.literal_ids[0]]
        types: list[Ids] = [self.literal_types[0]]
        for index, text in enumerate(texts):
            ids += [text, self.literal_ids[index + 1]]
            types += [np.full(text.size, self.text_types[index], np.int64), self.literal_types[index + 1]]
        return np.concatenate(ids), np.concatenate(types)


def learn_template(ids: Sequence[int], type_ids: Sequence[int], sequence_ids: Sequence[int | None]) -> Template | None:
    """The template of one encoding (special tokens are where `sequence_ids` is None); None if it has none.

    The texts must appear in order, each once and contiguous, with one token
    type each: the layout of every template processor (BERT, RoBERTa,
    TemplateProcessing), which is what windows rely on.
    """
    literal_ids: list[Ids] = []
    literal_types: list[Ids] = []
    text_types: list[int] = []
    position, count = 0, len(ids)
    for expected in range(len(set(sequence_ids) - {None}) + 1):
        start = position
        while position < count and sequence_ids[position] is None:
            position += 1
        literal_ids.append(np.array(ids[start:position], dtype=np.int64))
        literal_types.append(np.array(type_ids[start:position], dtype=np.int64))
        start = position
        while position < count and sequence_ids[position] == expected:
            position += 1
        if position == start:
            break
        types = set(type_ids[start:position])
        if len(types) != 1:
            return None
        text_types.append(types.pop())
    if position != count or len(literal_ids) != len(text_types) + 1:
        return None
    return Template(tuple(literal_ids), tuple(literal_types), tuple(text_types))


@dataclass(frozen=True, slots=True)
class SpecialTokens:
    single: Template
    pair: Template


@dataclass(frozen=True, slots=True)
class Chunking:
    """How a group windows long inputs: window length (special tokens included), overlap, bound."""

    window: int
    stride: int | None  # None: a quarter of the tokens the windowed text gets in a window
    max_windows: int


@dataclass(frozen=True, slots=True)
class Windows:
    """Every input's windows, in input order: window w is ids[offsets[w]:offsets[w+1]]."""

    ids: Ids
    type_ids: Ids
    lengths: Ids
    windows_per_input: Ids


def _exclusive_cumsum(values: Ids) -> Ids:
    out = np.zeros(values.size, dtype=np.int64)
    np.cumsum(values[:-1], out=out[1:])
    return out


def make_windows(
    tokens: SpecialTokens,
    *,
    is_pair: npt.NDArray[np.bool_],
    first_ids: Ids,
    first_lengths: Ids,
    second_ids: Ids,
    second_lengths: Ids,
    chunking: Chunking,
) -> Windows:
    """Cut each input's windowed text (a lone text, or a pair's second) into windows of `chunking.window` tokens.

    Per input: `first_lengths` is 0 for a lone text (whose tokens are in
    `second_ids`); the flat id arrays hold the texts' tokens without special
    tokens, in input order. An input that fits is one window, identical to
    the tokenizer's own encoding of it.
    """
    inputs = int(is_pair.size)
    single, pair = tokens.single, tokens.pair
    window = chunking.window
    # The tokens the windowed text gets in each window of its input.
    room = window - np.where(is_pair, pair.special_count, single.special_count) - first_lengths
    if inputs and int(room.min()) < 1:
        index = int(np.argmin(room))
        raise FirstTextTooLong(
            f"input {index}: its first text has {int(first_lengths[index])} tokens, which with the special tokens "
            f"fill the window of {window}: no room is left for the second text"
        )
    overlap = room // 4 if chunking.stride is None else np.minimum(chunking.stride, room // 2)
    step = room - overlap
    counts = 1 + (np.maximum(second_lengths - room, 0) + step - 1) // step
    if inputs and int(counts.max()) > chunking.max_windows:
        index = int(np.argmax(counts))
        raise TooManyWindows(
            f"input {index} has {int(second_lengths[index])} tokens and would take {int(counts[index])} windows "
            f"of {window}; this consumer group allows at most {chunking.max_windows} per input"
        )

    # One row per window: which input, and the span of its windowed text.
    owner = np.repeat(np.arange(inputs), counts)
    k = np.arange(owner.size, dtype=np.int64) - _exclusive_cumsum(counts)[owner]
    start = k * step[owner]
    length = np.minimum(room[owner], second_lengths[owner] - start)
    window_is_pair = is_pair[owner]

    # Everything a window is made of lives in one buffer: the special tokens of
    # both templates, then the first texts, then the windowed texts.
    literal_pieces = (*single.literal_ids, *pair.literal_ids)
    literal_len = np.array([piece.size for piece in literal_pieces], dtype=np.int64)
    literal_at = _exclusive_cumsum(literal_len)
    single_before, single_after, pair_before, pair_middle, pair_after = range(5)
    firsts_at = int(literal_len.sum())
    seconds_at = firsts_at + int(first_ids.size)
    id_buffer = np.concatenate([*literal_pieces, first_ids, second_ids])
    type_buffer = np.concatenate(
        [
            *single.literal_types,
            *pair.literal_types,
            np.full(first_ids.size, pair.text_types[0], np.int64),
            np.repeat(np.where(is_pair, pair.text_types[1], single.text_types[0]), second_lengths),
        ]
    )

    # Each window is five segments of that buffer; a lone text's last two are empty:
    #   pair:  [before] first [middle] window [after]
    #   text:  [before] window [after] - -
    window_at = seconds_at + _exclusive_cumsum(second_lengths)[owner] + start
    first_at = firsts_at + _exclusive_cumsum(first_lengths)[owner]
    zero = np.zeros_like(owner)

    def literal(pair_piece: int, single_piece: int | None) -> tuple[Ids, Ids]:
        at = np.where(window_is_pair, literal_at[pair_piece], 0 if single_piece is None else literal_at[single_piece])
        size = np.where(
            window_is_pair, literal_len[pair_piece], 0 if single_piece is None else literal_len[single_piece]
        )
        return at, size

    segments = [
        literal(pair_before, single_before),
        (np.where(window_is_pair, first_at, window_at), np.where(window_is_pair, first_lengths[owner], length)),
        literal(pair_middle, single_after),
        (window_at, np.where(window_is_pair, length, zero)),
        literal(pair_after, None),
    ]
    segment_at = np.stack([at for at, _ in segments], axis=1).ravel()
    segment_len = np.stack([size for _, size in segments], axis=1).ravel()
    # Concatenated ranges: output position p of segment s reads buffer[segment_at[s] + (p - first p of s)].
    source = np.repeat(segment_at - _exclusive_cumsum(segment_len), segment_len) + np.arange(
        int(segment_len.sum()), dtype=np.int64
    )
    window_lengths = segment_len.reshape(-1, 5).sum(axis=1)
    return Windows(id_buffer[source], type_buffer[source], window_lengths, counts)


def aggregate(logits: Logits, windows_per_input: Ids, how: ChunkAggregate) -> tuple[Logits, Ids | None]:
    """One logits row per input from its windows' rows, and for `max` which window gave each label's max.

    `best[i, j]` is the index (within input i's windows) of the first window
    whose logit for label j is the input's max. An input of one window keeps
    its logits exactly.
    """
    inputs = int(windows_per_input.size)
    if logits.shape[0] == inputs:  # every input fitted in one window
        return logits, (np.zeros(logits.shape, dtype=np.int64) if how == "max" else None)
    starts = _exclusive_cumsum(windows_per_input)
    if how == "mean":
        means = np.add.reduceat(logits, starts, axis=0) / windows_per_input[:, None]
        return means.astype(np.float32), None
    maxima = np.maximum.reduceat(logits, starts, axis=0)
    owner = np.repeat(np.arange(inputs), windows_per_input)
    position = np.where(logits == maxima[owner], np.arange(logits.shape[0])[:, None], logits.shape[0])
    best = np.minimum.reduceat(position, starts, axis=0) - starts[:, None]
    # A NaN logit never equals the max; report the input's last window rather than a window it lacks.
    return maxima, np.minimum(best, windows_per_input[:, None] - 1)
