"""The autoscaling policy: replicas from the tokens queued per replica, not from request counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from slipstream.ray_serve.autoscaling import QUEUED_TOKENS, QueuedTokensPolicy


@dataclass
class Context:
    target_num_replicas: int
    running_replicas: list[str]
    aggregated_metrics: dict[str, dict[str, float]] | None = field(default_factory=dict)


def tokens(**per_replica: float) -> dict[str, dict[str, float]]:
    return {QUEUED_TOKENS: dict(per_replica)}


def test_one_replica_with_more_than_the_target_queued_asks_for_two():
    policy = QueuedTokensPolicy(target_queue_tokens=1000)
    assert policy(Context(1, ["a"], tokens(a=1500)))[0] == 2
    assert policy(Context(1, ["a"], tokens(a=900)))[0] == 1


def test_replicas_follow_the_total_queue():
    policy = QueuedTokensPolicy(target_queue_tokens=1000)
    assert policy(Context(2, ["a", "b"], tokens(a=3000, b=2500)))[0] == 6
    assert policy(Context(4, ["a", "b", "c", "d"], tokens(a=100, b=0, c=0, d=50)))[0] == 1
    assert policy(Context(3, ["a", "b", "c"], tokens(a=0, b=0, c=0)))[0] == 0  # Ray then holds min_replicas


def test_a_few_large_requests_count_as_much_as_many_small_ones():
    policy = QueuedTokensPolicy(target_queue_tokens=1000)
    one_rerank_of_100_passages = policy(Context(1, ["a"], tokens(a=100 * 200)))[0]
    many_short_classifies = policy(Context(1, ["a"], tokens(a=2000 * 10)))[0]
    assert one_rerank_of_100_passages == many_short_classifies == 20


def test_reports_of_stopped_replicas_and_missing_reports_are_ignored():
    policy = QueuedTokensPolicy(target_queue_tokens=1000)
    assert policy(Context(2, ["a"], tokens(a=500, gone=9000)))[0] == 1
    assert policy(Context(3, ["a", "b"], {}))[0] == 3  # nothing reported yet: keep the target
    assert policy(Context(3, ["a", "b"], None))[0] == 3


def test_the_target_must_be_positive():
    with pytest.raises(ValueError, match="target_queue_tokens"):
        QueuedTokensPolicy(target_queue_tokens=0)
