"""Turning request texts into token ids, with the model's own tokenizer.

The Rust tokenizer does the work and releases the GIL, so callers run
`TextEncoder.encode` in a worker thread. Results come back flat (all items'
ids concatenated, plus per-item lengths) so that padding a batch later is one
numpy scatter rather than a Python loop over tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from slipstream.batching.chunking import Chunking, SpecialTokens, Template, learn_template, make_windows

TruncationDirection = Literal["right", "left"]
TextInput = str | tuple[str, str]


class InputTooLong(ValueError):
    """An input is longer than the model accepts and truncation was turned off."""


class EmptyInput(ValueError):
    """An input tokenized to nothing, which the model cannot take."""


class TokenizerFailure(ValueError):
    """The Rust tokenizer panicked on an input (a `PanicException`, which is not an `Exception`)."""


@contextmanager
def _panics_as_errors() -> Iterator[None]:
    # A panic in the Rust tokenizer surfaces as pyo3's PanicException, a BaseException:
    # as such it would pass every `except Exception` and fail whatever else shared the call.
    try:
        yield
    except Exception:
        raise
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise TokenizerFailure(f"the tokenizer failed on this input: {exc}") from None


class ChunkingUnsupported(ValueError):
    """The model's tokenizer lays out special tokens in a way windows cannot reproduce."""


@dataclass(frozen=True, slots=True)
class EncodedItems:
    """Token ids of several items, concatenated: item i is ids[offsets[i]:offsets[i+1]]."""

    ids: npt.NDArray[np.int64]
    type_ids: npt.NDArray[np.int64] | None  # None when the model takes no token_type_ids
    lengths: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]  # len(items) + 1 entries
    # Set when the items are windows of longer inputs (long_text "chunk"):
    # input i's windows are the next windows_per_input[i] items.
    windows_per_input: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def total_tokens(self) -> int:
        return int(self.offsets[-1])

    def slice(self, start: int, stop: int) -> EncodedItems:
        """Items [start, stop) as their own EncodedItems (views of the same ids)."""
        first, last = int(self.offsets[start]), int(self.offsets[stop])
        return EncodedItems(
            ids=self.ids[first:last],
            type_ids=None if self.type_ids is None else self.type_ids[first:last],
            lengths=self.lengths[start:stop],
            offsets=self.offsets[start : stop + 1] - first,
        )


def _flatten(encodings: list[Encoding], with_type_ids: bool) -> EncodedItems:
    count = len(encodings)
    lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=count)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    type_ids = None
    if count == 1:  # the common single-text request: skip the chaining machinery
        ids = np.array(encodings[0].ids, dtype=np.int64)
        if with_type_ids:
            type_ids = np.array(encodings[0].type_ids, dtype=np.int64)
    else:
        ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)
        if with_type_ids:
            type_ids = np.fromiter(chain.from_iterable(e.type_ids for e in encodings), dtype=np.int64, count=total)
    return EncodedItems(ids=ids, type_ids=type_ids, lengths=lengths, offsets=offsets)


class TextEncoder:
    """One model's tokenizer, configured for serving.

    Pairs are truncated with the manifest's strategy (`only_second` by default:
    the query, the first text, survives and the document is cut); when the first
    text alone is too long for that, the pair falls back to `longest_first`.
    """

    def __init__(
        self,
        tokenizer_file: Path,
        *,
        max_length: int,
        uses_token_type_ids: bool,
        pair_truncation: str = "only_second",
    ) -> None:
        self.max_length = max_length
        self.uses_token_type_ids = uses_token_type_ids
        self._pair_truncation = pair_truncation
        source = Path(tokenizer_file).read_text()
        # One Tokenizer per configuration: changing truncation on a shared
        # instance would race between threads.
        self._plain = self._configured(source, truncation=None)
        self._truncating = {
            (direction, strategy): self._configured(source, truncation=(strategy, direction))
            for direction in ("right", "left")
            for strategy in ("longest_first", pair_truncation)
        }
        self.special_tokens = self._special_tokens()

    def _configured(self, source: str, truncation: tuple[str, str] | None) -> Tokenizer:
        tokenizer = Tokenizer.from_str(source)
        tokenizer.no_padding()
        if truncation is None:
            tokenizer.no_truncation()
        else:
            strategy, direction = truncation
            tokenizer.enable_truncation(self.max_length, strategy=strategy, direction=direction)
        return tokenizer

    def encode(
        self,
        inputs: Sequence[TextInput],
        *,
        truncate: bool,
        direction: TruncationDirection = "right",
        check: bool = True,
        chunking: Chunking | None = None,
    ) -> EncodedItems:
        """Tokenize a batch of texts or pairs; raise InputTooLong / EmptyInput (unless not `check`).

        With `chunking`, an over-long input becomes several windows instead
        (`slipstream.batching.chunking`), and `truncate` does not apply.
        Any failure of the tokenizer itself is an `Exception` (a panic becomes `TokenizerFailure`).
        """
        with _panics_as_errors():
            if chunking is not None:
                windows = self._encode_windows(inputs, chunking)
                if check:
                    self.check(windows, truncated=True)
                return windows
            if truncate:
                encodings = self._encode_truncated(inputs, direction)
            else:
                encodings = self._plain.encode_batch_fast(inputs)
        encoded = _flatten(encodings, self.uses_token_type_ids)
        if check:
            self.check(encoded, truncated=truncate)
        return encoded

    def check(self, encoded: EncodedItems, *, truncated: bool) -> None:
        """Refuse inputs the model cannot take: over-long (when not truncated) or empty."""
        if not truncated and encoded.lengths.size and int(encoded.lengths.max()) > self.max_length:
            index = int(np.argmax(encoded.lengths > self.max_length))
            raise InputTooLong(
                f"input {index} has {int(encoded.lengths[index])} tokens; the model accepts at most "
                f'{self.max_length} (send long_text: "chunk" to score it in windows, or "truncate" to cut it)'
            )
        if encoded.lengths.size and int(encoded.lengths.min()) == 0:
            index = int(np.argmin(encoded.lengths))
            raise EmptyInput(f"input {index} is empty after tokenization; the model cannot take it")

    def _encode_truncated(self, inputs: Sequence[TextInput], direction: TruncationDirection) -> list[Encoding]:
        # The pair strategy applies to pairs; `only_second` would refuse a lone text.
        has_pairs = any(not isinstance(item, str) for item in inputs)
        strategy = self._pair_truncation if has_pairs else "longest_first"
        primary = self._truncating[(direction, strategy)]
        try:
            encodings: list[Encoding] = primary.encode_batch_fast(inputs)
            return encodings
        except Exception:
            # `only_second` refuses a pair whose first text alone is too long;
            # only such batches get here, so a per-item retry is affordable.
            fallback = self._truncating[(direction, "longest_first")]
            encodings = []
            for item in inputs:
                try:
                    encodings.append(primary.encode(item) if isinstance(item, str) else primary.encode(*item))
                except Exception:
                    encodings.append(fallback.encode(item) if isinstance(item, str) else fallback.encode(*item))
            return encodings

    def _special_tokens(self) -> SpecialTokens | None:
        """The model's special-token layout, if windows assembled from it match the tokenizer's own encodings."""
        probe_first, probe_second = "what colour is the dog?", "the puppy is light blue."
        templates: list[Template] = []
        for texts in ((probe_second,), (probe_first, probe_second)):
            whole = self._plain.encode(*texts)
            template = learn_template(whole.ids, whole.type_ids, whole.sequence_ids)
            if template is None or len(template.text_types) != len(texts):
                return None
            parts = [np.array(self._plain.encode(text, add_special_tokens=False).ids, np.int64) for text in texts]
            ids, type_ids = template.assemble(parts)
            if ids.tolist() != whole.ids or type_ids.tolist() != whole.type_ids:
                return None
            templates.append(template)
        return SpecialTokens(single=templates[0], pair=templates[1])

    def _encode_windows(self, inputs: Sequence[TextInput], chunking: Chunking) -> EncodedItems:
        if self.special_tokens is None:
            raise ChunkingUnsupported(
                "this model's tokenizer places its special tokens in a way Slipstream cannot window; "
                "send long_text truncate or reject"
            )
        # Each text is tokenized once, without special tokens; windows are cut from its ids.
        is_pair = np.fromiter((not isinstance(item, str) for item in inputs), dtype=np.bool_, count=len(inputs))
        firsts = [item[0] for item in inputs if not isinstance(item, str)]
        seconds = [item if isinstance(item, str) else item[1] for item in inputs]
        encodings = self._plain.encode_batch_fast([*firsts, *seconds], add_special_tokens=False)
        first = _flatten(encodings[: len(firsts)], with_type_ids=False)
        second = _flatten(encodings[len(firsts) :], with_type_ids=False)
        first_lengths = np.zeros(len(inputs), dtype=np.int64)
        first_lengths[is_pair] = first.lengths
        windows = make_windows(
            self.special_tokens,
            is_pair=is_pair,
            first_ids=first.ids,
            first_lengths=first_lengths,
            second_ids=second.ids,
            second_lengths=second.lengths,
            chunking=chunking,
        )
        offsets = np.zeros(windows.lengths.size + 1, dtype=np.int64)
        np.cumsum(windows.lengths, out=offsets[1:])
        return EncodedItems(
            ids=windows.ids,
            type_ids=windows.type_ids if self.uses_token_type_ids else None,
            lengths=windows.lengths,
            offsets=offsets,
            windows_per_input=windows.windows_per_input,
        )

    def tokens(self, text: str) -> list[str]:
        """The token strings of one text, special tokens included (for /tokenize)."""
        with _panics_as_errors():
            tokens: list[str] = self._plain.encode(text).tokens
        return tokens

    def encode_untruncated(self, texts: Sequence[str], *, add_special_tokens: bool) -> list[Encoding]:
        """Each text's whole encoding, with offsets and the special-token mask (for TEI's /tokenize)."""
        encodings: list[Encoding] = self._plain.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return encodings

    def decode(self, ids: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        """The text of each id sequence; ids outside the vocabulary are left out."""
        texts: list[str] = self._plain.decode_batch([list(row) for row in ids], skip_special_tokens=skip_special_tokens)
        return texts

    def cut_to_tokens(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Each text cut after its first `max_tokens` tokens (special tokens not counted).

        Cut at a token's end in the original text, so the pair the text later joins
        tokenizes to those same tokens.
        """
        encodings = self._plain.encode_batch(list(texts), add_special_tokens=False)
        return [
            text if len(encoding) <= max_tokens else text[: encoding.offsets[max_tokens - 1][1]]
            for text, encoding in zip(texts, encodings, strict=True)
        ]
