"""Run each item of a batch alone, cut to its own length.

What a dynamically quantized (int8) variant needs to be batch-invariant: ONNX
Runtime's dynamic quantization computes one activation scale per tensor, over
every row and padded position of the run, so an item's logits would move with
its batch-mates and its padding. Alone and unpadded, the scale is the item's
own. Rows are right-padded (as the batcher pads them): each is cut after its
last real token.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from slipstream.engines.base import Float32Array, Int64Array

Feeds = dict[str, Int64Array]


def real_lengths(attention_mask: Int64Array) -> Int64Array:
    """Per row: the position after its last real token (the full width for an all-padding row)."""
    width = attention_mask.shape[1]
    last_from_end = np.argmax(attention_mask[:, ::-1] != 0, axis=1)
    lengths: Int64Array = (width - last_from_end).astype(np.int64)
    return lengths


def run_each_item_alone(run: Callable[[Feeds], Float32Array], feeds: Feeds) -> Float32Array:
    """`run` once per row, on that row alone without its right padding; logits in row order."""
    lengths = real_lengths(feeds["attention_mask"]).tolist()
    # One ONNX Runtime run per item: the loop costs microseconds against milliseconds of model.
    rows = [
        run({name: values[row : row + 1, :length] for name, values in feeds.items()})
        for row, length in enumerate(lengths)
    ]
    return np.concatenate(rows, axis=0)
