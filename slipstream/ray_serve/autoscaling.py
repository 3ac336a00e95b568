"""Ray Serve autoscaling on queued tokens per replica, not on request counts.

One rerank request can carry 256 passages and one classify request a single short
text, so the number of requests in a replica says little about its load. The tokens
waiting in its batchers do: each replica reports them (`record_autoscaling_stats`,
the same number as its `slipstream_queue_tokens` gauge), Ray averages each replica's
reports over `look_back_period_s`, and this policy asks for

    replicas = (sum over running replicas of their average queued tokens) / target_queue_tokens

rounded up. Ray then applies `min_replicas`/`max_replicas`, `upscale_delay_s` and
`downscale_delay_s`, so one burst does not scale anything.

Named in the Serve config by its import path; Ray builds one instance per deployment
with `policy_kwargs`. Ray ships this module by value to its controller, so it
imports nothing but the standard library.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

POLICY_PATH = "slipstream.ray_serve.autoscaling:QueuedTokensPolicy"
# The name of the custom autoscaling metric each replica reports.
QUEUED_TOKENS = "queued_tokens"


class AutoscalingContext(Protocol):
    """What the policy reads of Ray's `ray.serve.config.AutoscalingContext`."""

    @property
    def target_num_replicas(self) -> int: ...

    @property
    def running_replicas(self) -> list[Any]: ...

    @property
    def aggregated_metrics(self) -> dict[str, dict[Any, float]] | None: ...


class QueuedTokensPolicy:
    """Replicas enough for each to hold about `target_queue_tokens` queued tokens."""

    def __init__(self, target_queue_tokens: int) -> None:
        if target_queue_tokens < 1:
            raise ValueError(f"target_queue_tokens must be >= 1, not {target_queue_tokens}")
        self.target_queue_tokens = target_queue_tokens

    def __call__(self, ctx: AutoscalingContext) -> tuple[int, dict[str, Any]]:
        reported = (ctx.aggregated_metrics or {}).get(QUEUED_TOKENS, {})
        running = set(ctx.running_replicas)
        per_replica = [tokens for replica, tokens in reported.items() if replica in running]
        if not per_replica:  # nothing reported yet (replicas starting): keep what is asked for
            return ctx.target_num_replicas, {}
        return math.ceil(sum(per_replica) / self.target_queue_tokens), {}
