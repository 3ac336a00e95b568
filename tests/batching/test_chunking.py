"""Long inputs as windows: what each window holds, and how window logits fold back per input.

The rules (issue 17): windows of the model's maximum length, overlapping by a
stride (a quarter of the window by default); a pair's first text whole in every
window and only the second windowed, 422 when the first alone fills the window;
each text tokenized once, so no token is lost or repeated at a boundary except
by the overlap; an input that fits is exactly the tokenizer's own encoding.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from slipstream.batching.chunking import (
    Chunking,
    FirstTextTooLong,
    TooManyWindows,
    aggregate,
    resolve_long_text,
)
from slipstream.batching.errors import InvalidInput
from slipstream.batching.tokenization import EncodedItems, TextEncoder, TextInput
from tests.batching.fake_artifact import MINILM_TOKENIZER

WINDOW = 16  # the model's maximum length in these tests
# A BERT tokenizer adds [CLS] text [SEP] (2) or [CLS] a [SEP] b [SEP] (3).
TEXT_ROOM = WINDOW - 2
DEFAULT_OVERLAP = TEXT_ROOM // 4  # a quarter of the window
DEFAULT_STEP = TEXT_ROOM - DEFAULT_OVERLAP
CHUNK = Chunking(window=WINDOW, stride=None, max_windows=64)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(MINILM_TOKENIZER, max_length=WINDOW, uses_token_type_ids=True)


@pytest.fixture(scope="module")
def plain() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(MINILM_TOKENIZER))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def words(count: int, start: int = 0) -> str:
    """`count` words that are one token each in MiniLM's vocabulary (numbers)."""
    return " ".join(str(n) for n in range(start, start + count))


def windows_of(encoded: EncodedItems) -> list[list[int]]:
    return [encoded.ids[encoded.offsets[i] : encoded.offsets[i + 1]].tolist() for i in range(len(encoded))]


def types_of(encoded: EncodedItems) -> list[list[int]]:
    assert encoded.type_ids is not None
    return [encoded.type_ids[encoded.offsets[i] : encoded.offsets[i + 1]].tolist() for i in range(len(encoded))]


def content(plain: Tokenizer, text: str) -> list[int]:
    return plain.encode(text, add_special_tokens=False).ids


CLS, SEP = 101, 102


class TestBoundaries:
    def test_an_input_of_exactly_the_window_is_one_window_identical_to_its_plain_encoding(self, encoder, plain):
        text = words(TEXT_ROOM)
        assert len(plain.encode(text).ids) == WINDOW
        chunked = encoder.encode([text], truncate=False, chunking=CHUNK)
        assert chunked.windows_per_input.tolist() == [1]
        assert windows_of(chunked) == [plain.encode(text).ids]

    def test_one_token_over_is_two_windows_the_second_repeating_the_overlap(self, encoder, plain):
        text = words(TEXT_ROOM + 1)
        tokens = content(plain, text)
        chunked = encoder.encode([text], truncate=False, chunking=CHUNK)
        assert chunked.windows_per_input.tolist() == [2]
        first, second = windows_of(chunked)
        assert first == [CLS, *tokens[:TEXT_ROOM], SEP]
        assert second == [CLS, *tokens[DEFAULT_STEP:], SEP]
        assert len(second) - 2 == DEFAULT_OVERLAP + 1

    def test_a_text_that_ends_on_a_window_boundary_fills_its_last_window(self, encoder, plain):
        text = words(TEXT_ROOM + 2 * DEFAULT_STEP)
        tokens = content(plain, text)
        chunked = encoder.encode([text], truncate=False, chunking=CHUNK)
        assert chunked.windows_per_input.tolist() == [3]
        assert chunked.lengths.tolist() == [WINDOW] * 3
        assert windows_of(chunked)[-1] == [CLS, *tokens[-TEXT_ROOM:], SEP]

    @pytest.mark.parametrize("multiple", [2, 3, 5])
    def test_a_length_that_is_a_multiple_of_the_stride_loses_and_repeats_nothing_but_the_overlap(
        self, encoder, plain, multiple
    ):
        stride = 4
        text = words(stride * multiple * 3)
        tokens = content(plain, text)
        chunked = encoder.encode(
            [text], truncate=False, chunking=Chunking(window=WINDOW, stride=stride, max_windows=64)
        )
        pieces = [window[1:-1] for window in windows_of(chunked)]
        assert all(len(window) <= WINDOW for window in windows_of(chunked))
        assert all(a[-stride:] == b[:stride] for a, b in pairwise(pieces))
        assert pieces[0] + [t for piece in pieces[1:] for t in piece[stride:]] == tokens

    def test_a_pair_keeps_its_first_text_whole_in_every_window_and_windows_only_the_second(self, encoder, plain):
        query, document = "what colour is the dog ?", words(40)
        query_tokens, document_tokens = content(plain, query), content(plain, document)
        chunked = encoder.encode([(query, document)], truncate=False, chunking=CHUNK)
        room = WINDOW - 3 - len(query_tokens)
        overlap = room // 4
        windows, types = windows_of(chunked), types_of(chunked)
        assert len(windows) == chunked.windows_per_input[0] > 1
        seen: list[int] = []
        for index, (window, window_types) in enumerate(zip(windows, types, strict=True)):
            head = [CLS, *query_tokens, SEP]
            assert window[: len(head)] == head and window[-1] == SEP
            assert window_types == [0] * len(head) + [1] * (len(window) - len(head))
            piece = window[len(head) : -1]
            seen += piece if index == 0 else piece[overlap:]
        assert seen == document_tokens

    def test_a_pair_whose_query_fills_the_window_is_refused(self, encoder):
        query = words(WINDOW - 3)  # with [CLS] [SEP] [SEP], nothing is left for the document
        with pytest.raises(FirstTextTooLong, match="input 0"):
            encoder.encode([(query, "a document")], truncate=False, chunking=CHUNK)

    def test_a_query_that_leaves_one_token_gives_one_token_windows(self, encoder, plain):
        query = words(WINDOW - 4)
        chunked = encoder.encode([(query, "7 8 9")], truncate=False, chunking=CHUNK)
        assert chunked.windows_per_input.tolist() == [3]
        assert [window[-2] for window in windows_of(chunked)] == content(plain, "7 8 9")

    def test_more_windows_than_allowed_per_input_is_refused_before_any_window_is_built(self, encoder):
        limited = Chunking(window=WINDOW, stride=None, max_windows=3)
        encoder.encode([words(TEXT_ROOM + 2 * DEFAULT_STEP)], truncate=False, chunking=limited)
        with pytest.raises(TooManyWindows, match=r"input 1 .* at most 3"):
            encoder.encode(["short", words(TEXT_ROOM + 3 * DEFAULT_STEP)], truncate=False, chunking=limited)

    def test_a_stride_larger_than_half_a_window_is_capped_there(self, encoder, plain):
        text = words(30)
        chunked = encoder.encode([text], truncate=False, chunking=Chunking(window=WINDOW, stride=100, max_windows=64))
        first, second = (window[1:-1] for window in windows_of(chunked)[:2])
        assert first[TEXT_ROOM // 2 :] == second[: TEXT_ROOM // 2]
        assert first[TEXT_ROOM // 2 - 1] != second[0]


class TestIdentity:
    def test_inputs_that_fit_are_their_tokenizers_own_encodings_texts_and_pairs_mixed(self, encoder):
        items = ["hello world", ("what is it?", "a dog"), "", ("q", "")]
        chunked = encoder.encode(items, truncate=False, chunking=CHUNK)
        whole = encoder.encode(items, truncate=False)
        assert chunked.windows_per_input.tolist() == [1, 1, 1, 1]
        assert windows_of(chunked) == windows_of(whole)
        assert types_of(chunked) == types_of(whole)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 4), st.integers(0, 60), st.booleans()),
            min_size=1,
            max_size=6,
        ),
        st.one_of(st.none(), st.integers(0, 10)),
    )
    def test_every_window_fits_and_together_they_are_the_input_with_only_the_overlap_repeated(
        self, encoder, plain, shapes, stride
    ):
        items = [(words(q, 500), words(d, 1000)) if is_pair else words(d, 1000) for q, d, is_pair in shapes]
        chunked = encoder.encode(
            items, truncate=False, chunking=Chunking(window=WINDOW, stride=stride, max_windows=1000)
        )
        assert int(chunked.windows_per_input.sum()) == len(chunked)
        windows = iter(windows_of(chunked))
        for item, count in zip(items, chunked.windows_per_input.tolist(), strict=True):
            mine = [next(windows) for _ in range(count)]
            assert all(len(window) <= WINDOW for window in mine)
            head = [CLS] if isinstance(item, str) else [CLS, *content(plain, item[0]), SEP]
            second = item if isinstance(item, str) else item[1]
            room = WINDOW - len(head) - 1
            overlap = room // 4 if stride is None else min(stride, room // 2)
            pieces = []
            for window in mine:
                assert window[: len(head)] == head and window[-1] == SEP
                pieces.append(window[len(head) : -1])
            rebuilt = pieces[0] + [t for piece in pieces[1:] for t in piece[overlap:]]
            assert rebuilt == content(plain, second)
            if count == 1:
                whole = plain.encode(item) if isinstance(item, str) else plain.encode(*item)
                assert mine[0] == whole.ids


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "deberta-v2", "albert", "mpnet", "distilbert"])
def test_each_tokenizer_family_windows_inside_its_own_special_tokens(tiny_model_factory, model_type):
    tokenizer_file = tiny_model_factory(model_type) / "tokenizer.json"
    window = 48
    encoder = TextEncoder(tokenizer_file, max_length=window, uses_token_type_ids=True)
    chunking = Chunking(window=window, stride=None, max_windows=64)
    assert encoder.special_tokens is not None
    fits: list[TextInput] = ["the quick brown fox", ("what colour is the dog", "the puppy is light blue")]
    chunked = encoder.encode(fits, truncate=False, chunking=chunking)
    whole = encoder.encode(fits, truncate=False)
    assert (windows_of(chunked), types_of(chunked)) == (windows_of(whole), types_of(whole))

    # A long pair: the tokenizer's own encoding of it, split where the document starts and ends.
    pair = ("the dog", " ".join(["the quick brown fox jumps over a lazy dog"] * 12))
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    full = tokenizer.encode(*pair)
    document = [i for i, sequence in enumerate(full.sequence_ids) if sequence == 1]
    head, tail = slice(0, document[0]), slice(document[-1] + 1, None)
    room = window - len(full.ids[head]) - len(full.ids[tail])
    chunked = encoder.encode([pair], truncate=False, chunking=chunking)
    assert chunked.windows_per_input is not None and chunked.windows_per_input[0] > 1
    pieces = []
    for ids, types in zip(windows_of(chunked), types_of(chunked), strict=True):
        assert len(ids) <= window
        size = len(ids) - len(full.ids[head]) - len(full.ids[tail])
        assert ids == full.ids[head] + ids[document[0] : document[0] + size] + full.ids[tail]
        assert types == full.type_ids[head] + [full.type_ids[document[0]]] * size + full.type_ids[tail]
        pieces.append(ids[document[0] : document[0] + size])
    rebuilt = pieces[0] + [t for piece in pieces[1:] for t in piece[room // 4 :]]
    assert rebuilt == [full.ids[i] for i in document]


class TestAggregate:
    logits = np.array([[1, 5], [3, 2], [2, 9], [7, 0], [-1, -1]], dtype=np.float32)
    windows = np.array([3, 1, 1])  # input 0: rows 0-2, input 1: row 3, input 2: row 4

    def test_max_takes_each_labels_best_window_and_says_which(self):
        scores, best = aggregate(self.logits, self.windows, "max")
        assert scores.tolist() == [[3, 9], [7, 0], [-1, -1]]
        assert best is not None and best.tolist() == [[1, 2], [0, 0], [0, 0]]
        assert scores.dtype == np.float32

    def test_mean_averages_the_logits_and_names_no_window(self):
        scores, best = aggregate(self.logits, self.windows, "mean")
        assert scores.tolist() == [[2, pytest.approx(16 / 3)], [7, 0], [-1, -1]]
        assert best is None and scores.dtype == np.float32

    def test_ties_name_the_first_window_and_one_window_keeps_its_logits_exactly(self):
        tied = np.array([[0.1], [0.3], [0.3]], dtype=np.float32)
        best = aggregate(tied, np.array([3]), "max")[1]
        assert best is not None and best.tolist() == [[1]]
        single = np.array([[0.123456789], [2.5]], dtype=np.float32)
        for how in ("max", "mean"):
            assert aggregate(single, np.array([1, 1]), how)[0].tobytes() == single.tobytes()


class TestLongTextMode:
    def test_the_request_field_wins_then_truncate_then_the_default(self):
        assert resolve_long_text("chunk", None, "truncate") == "chunk"
        assert resolve_long_text(None, False, "chunk") == "reject"
        assert resolve_long_text(None, True, "reject") == "truncate"
        assert resolve_long_text(None, None, "chunk") == "chunk"

    def test_chunk_agrees_with_either_truncate_but_a_contradiction_is_refused(self):
        assert resolve_long_text("chunk", True, "truncate") == "chunk"
        assert resolve_long_text("chunk", False, "truncate") == "chunk"
        assert resolve_long_text("truncate", True, "reject") == "truncate"
        with pytest.raises(InvalidInput, match="contradicts"):
            resolve_long_text("reject", True, "truncate")
        with pytest.raises(InvalidInput, match="contradicts"):
            resolve_long_text("truncate", False, "truncate")
