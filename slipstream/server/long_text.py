"""The request fields every scoring route shares for long inputs, and what `return_chunks` reports.

What the modes do is `slipstream.batching.chunking`'s; here they are only
described once for every route's schema, and the core's window counts are
turned into response fields.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from slipstream.batching.chunking import LongText
from slipstream.batching.group import Chunks, Scored

LongTextField = Annotated[
    LongText | None,
    Meta(
        description=(
            "What an input longer than the model's window gets: truncate (cut it), reject (422), or chunk (score "
            "overlapping windows of it and aggregate their logits; for a pair only the second text is windowed). "
            "Absent: `truncate`, else the consumer group's setting."
        )
    ),
]
ReturnChunksField = Annotated[
    bool,
    Meta(
        description=(
            'With long_text "chunk": add, per input, how many windows it took (`chunks`; 1 when it fitted) and, '
            "when windows are aggregated by their max, which window gave it (`best_chunk`, counted from 0)."
        )
    ),
]


def requested_chunks(scored: Scored, return_chunks: bool) -> Chunks | None:
    """What `return_chunks` reports, when asked for and the inputs were chunked."""
    return scored.chunks if return_chunks else None
