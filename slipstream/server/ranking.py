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
from litestar import Request

from slipstream.batching.consumer_group import ConsumerGroup
from slipstream.batching.errors import InvalidInput
from slipstream.batching.group import Scored
from slipstream.batching.tokenization import TextInput, TruncationDirection
from slipstream.server.disconnect import run_unless_disconnected
from slipstream.server.scores import sigmoid


@dataclass(frozen=True, slots=True)
class Ranking:
    indices: list[int]  # document indices, best first, cut to top_n
    scores: list[float]  # the score of each of those, in the same order
    scored: Scored  # the timings, for the response headers


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
    direction: TruncationDirection = "right",
) -> Ranking:
    """Score every (query, document) pair; best first, sigmoid probabilities unless `raw_scores`."""
    require_one_label(group)
    pairs: list[TextInput] = [(query, document) for document in documents]
    scored = await run_unless_disconnected(request, group.score(pairs, truncate=truncate, direction=direction))
    logits = scored.logits[:, 0]
    scores = logits if raw_scores else sigmoid(logits)
    order = np.argsort(-scores, kind="stable")
    if top_n is not None:
        order = order[:top_n]
    return Ranking(indices=order.tolist(), scores=scores[order].tolist(), scored=scored)
