"""Comparing a variant's logits with PyTorch's: the rank correlation and when it is left out."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.export.validation import TOLERANCES, compare, spearman


def test_spearman_is_one_for_the_same_order_and_minus_one_for_the_reverse():
    a = np.array([0.1, 0.5, 0.2, 0.9, 0.3])
    assert spearman(a, a * 10 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_spearman_ranks_ties_by_position_so_it_repeats_exactly():
    tied = np.array([1.0, 1.0, 1.0, 2.0] * 8)
    order = np.arange(tied.size, dtype=np.float64)
    first = spearman(tied, order)
    assert all(spearman(tied, order) == first for _ in range(5))
    # Ranked by position, a run of ties follows the order of the other array.
    assert spearman(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)


def test_compare_records_the_rank_correlation_of_scores_with_spread():
    reference = [np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]], dtype=np.float32)]
    validation = compare(reference, [reference[0] + 1e-6], TOLERANCES["fp32"])
    assert validation.passed
    assert validation.rank_correlation == pytest.approx(1.0)


def test_compare_leaves_the_rank_correlation_out_without_spread_or_for_non_finite_logits():
    flat = [np.full((4, 2), 0.5, dtype=np.float32)]
    assert compare(flat, flat, TOLERANCES["int8"]).rank_correlation is None
    reference = [np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)]
    broken = compare(reference, [np.array([[np.nan, 0.9], [0.8, 0.2]], dtype=np.float32)], TOLERANCES["fp32"])
    assert not broken.passed and broken.rank_correlation is None
