"""Logits -> the scores each API returns (numpy, vectorised over the whole request)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

Scores = npt.NDArray[np.float32]
Activation = Literal["softmax", "sigmoid", "none"]


def softmax(logits: Scores) -> Scores:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities: Scores = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


def sigmoid(logits: Scores) -> Scores:
    # The tanh form cannot overflow for large negative logits, unlike 1 / (1 + exp(-x)).
    probabilities: Scores = 0.5 * (1.0 + np.tanh(0.5 * logits))
    return probabilities


def activate(logits: Scores, activation: Activation) -> Scores:
    if activation == "softmax":
        return softmax(logits)
    if activation == "sigmoid":
        return sigmoid(logits)
    return logits


def tei_activation(num_labels: int) -> Activation:
    """TEI's rule when raw_scores is false: sigmoid for one label, softmax otherwise."""
    return "sigmoid" if num_labels == 1 else "softmax"
