"""Windows of a long input cut the obvious way, to check the served ones against (independent of chunking.py)."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from slipstream.batching.tokenization import TextInput
from tests.batching.fakes import RecordingEngine


def plain_tokenizer(tokenizer_file) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def reference_windows(
    plain: Tokenizer, item: TextInput, window: int, stride: int | None = None
) -> list[tuple[list[int], list[int]]]:
    """(ids, type ids) of each window: slices of the whole encoding around its windowed text."""
    whole = plain.encode(item) if isinstance(item, str) else plain.encode(*item)
    windowed = 0 if isinstance(item, str) else 1
    positions = [i for i, s in enumerate(whole.sequence_ids) if s == windowed]
    first, last = (positions[0], positions[-1] + 1) if positions else (len(whole.ids) - 1, len(whole.ids) - 1)
    room = window - (len(whole.ids) - (last - first))
    overlap = room // 4 if stride is None else min(stride, room // 2)
    windows = []
    for start in range(first, max(last - overlap, first + 1), room - overlap):
        stop = min(start + room, last)
        windows.append(
            (
                whole.ids[:first] + whole.ids[start:stop] + whole.ids[last:],
                whole.type_ids[:first] + whole.type_ids[start:stop] + whole.type_ids[last:],
            )
        )
    return windows


def recording_engine_scores(
    plain: Tokenizer, item: TextInput, window: int, how: str, num_labels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """`RecordingEngine`'s logits for the input chunked (max or mean of its windows), and each window's rows."""
    rows = np.stack(
        [
            RecordingEngine.reference(np.array(ids), np.array(types), num_labels)
            for ids, types in reference_windows(plain, item, window)
        ]
    )
    return (rows.max(axis=0) if how == "max" else rows.mean(axis=0)), rows
