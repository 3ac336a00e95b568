"""Ranking documents against one query with a one-label (cross-encoder) group.

TEI's `/rerank` and Cohere's `/v1/rerank` and `/v2/rerank` all rank through
here, so the same query and documents get the same order and scores whichever
API asks (and the same scores `/classify` gives for the pairs, after a sigmoid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from litestar import Request

from slipstream.batching.chunking import LongText
from slipstream.batching.consumer_group import ConsumerGroup
from slipstream.batching.errors import InvalidInput
from slipstream.batching.group import Chunks, Scored
from slipstream.batching.tokenization import TextInput, TruncationDirection
from slipstream.server.disconnect import run_unless_disconnected
from slipstream.server.scores import sigmoid


@dataclass(frozen=True, slots=True)
class Ranking:
    indices: list[int]  # document indices, best first, cut to top_n
    scores: list[float]  # the score of each of those, in the same order
    scored: Scored  # the timings, for the response headers
    # long_text "chunk": the windows each of those documents took, and the one that gave its score (max).
    windows: list[int] | None = None
    best_window: list[int] | None = None

    def reported_chunks(self, return_chunks: bool) -> list[tuple[int | None, int | None]]:
        """Per ranked document, what `return_chunks` adds: its window count and its best window (or None)."""
        count = len(self.indices)
        windows: list[int | None] = [None] * count
        best: list[int | None] = [None] * count
        if return_chunks and self.windows is not None:
            windows[:] = self.windows
            if self.best_window is not None:
                best[:] = self.best_window
        return list(zip(windows, best, strict=True))


def require_one_label(group: ConsumerGroup) -> None:
    if group.manifest.num_labels != 1:
        raise InvalidInput(
            f"consumer group {group.name!r} has {group.manifest.num_labels} labels; reranking needs a "
            "one-label (cross-encoder) model; use /predict or /classify"
        )


async def rank(
    request: Request[Any, Any, Any],
    group: ConsumerGroup,
    query: str,
    documents: Sequence[str],
    *,
    top_n: int | None = None,
    raw_scores: bool = False,
    truncate: bool | None = None,
    long_text: LongText | None = None,
    direction: TruncationDirection = "right",
) -> Ranking:
    """Score every (query, document) pair; best first, sigmoid probabilities unless `raw_scores`.

    With long_text "chunk" only the document is windowed; the query is whole in every window.
    """
    require_one_label(group)
    pairs: list[TextInput] = [(query, document) for document in documents]
    scored = await run_unless_disconnected(
        request, group.score(pairs, truncate=truncate, long_text=long_text, direction=direction)
    )
    logits = scored.logits[:, 0]
    scores = logits if raw_scores else sigmoid(logits)
    order = np.argsort(-scores, kind="stable")
    if top_n is not None:
        order = order[:top_n]
    windows, best = _windows(scored.chunks, order)
    return Ranking(
        indices=order.tolist(), scores=scores[order].tolist(), scored=scored, windows=windows, best_window=best
    )


def _windows(chunks: Chunks | None, order: npt.NDArray[np.intp]) -> tuple[list[int] | None, list[int] | None]:
    if chunks is None:
        return None, None
    best = None if chunks.best is None else chunks.best[order, 0].tolist()
    return chunks.windows[order].tolist(), best
