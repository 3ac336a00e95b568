"""The Ray Serve front end's own settings: replicas, autoscaling, routing limits, the local Ray.

They sit beside the service's settings (`ServiceSettings`, which each replica runs
whole): flags `--replicas 2`, environment `SLIPSTREAM_REPLICAS=2`. `host` and `port`
of the service settings are the Ray Serve proxy's.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from slipstream.settings import PositiveInt, Settings, setting


class RaySettings(Settings, frozen=True):
    """How Slipstream runs as a Ray Serve application."""

    replicas: Annotated[
        int, setting("Replicas, each a whole Slipstream (engines and batchers); ignored with autoscale.", ge=1)
    ] = 1
    autoscale: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^[0-9]+:[0-9]+$")] | None,
        setting(
            "MIN:MAX replicas, scaled on the tokens queued per replica (see target_queue_tokens); unset: a fixed "
            "number of replicas."
        ),
    ] = None
    address: Annotated[
        str | None,
        setting(
            "Ray cluster to join (`auto`, `ray://head:10001`, or a GCS address); unset: RAY_ADDRESS when set, "
            "else a local Ray that stops with the command."
        ),
    ] = None
    app_name: Annotated[str, setting("Name of the Ray Serve application.", min_length=1)] = "slipstream"
    replica_cpus: Annotated[float, setting("CPUs Ray reserves for each replica.", ge=0)] = 1.0
    replica_gpus: Annotated[float, setting("GPUs Ray reserves for each replica (1 for a GPU engine).", ge=0)] = 0.0
    # Ray's default of 5 would hand a replica 5 requests at a time: too few for
    # the batcher to form batches. The replica's own admission (max_queue_tokens,
    # 429 with Retry-After) is the limit that matters.
    max_ongoing_requests: Annotated[
        int,
        setting(
            "Requests Ray lets one replica hold at once; high, so that the batcher sees enough requests to form "
            "full batches and its token limit decides what is refused.",
            ge=1,
        ),
    ] = 256
    max_queued_requests: Annotated[
        int,
        setting(
            "Requests waiting in Ray's router for a replica with room; past it Ray answers 429 with Retry-After. "
            "-1: no limit.",
            ge=-1,
        ),
    ] = 1024
    target_queue_tokens: Annotated[
        int,
        setting(
            "Autoscaling target: tokens queued per replica (slipstream_queue_tokens). Ray adds replicas when the "
            "average is above it and removes them when below.",
            ge=1,
        ),
    ] = 16_384
    upscale_delay_s: Annotated[
        float, setting("How long the queue must ask for more replicas before one is added.", ge=0)
    ] = 30.0
    downscale_delay_s: Annotated[
        float, setting("How long the queue must ask for fewer replicas before one is removed.", ge=0)
    ] = 300.0
    metrics_interval_s: Annotated[
        float, setting("How often each replica reports its queued tokens to the autoscaler.", gt=0)
    ] = 2.0
    look_back_period_s: Annotated[
        float, setting("Window over which the autoscaler averages the queued tokens.", gt=0)
    ] = 10.0
    health_check_period_s: Annotated[float, setting("How often Ray checks each replica's engines.", gt=0)] = 10.0
    health_check_timeout_s: Annotated[
        float, setting("A health check that takes longer fails; the replica is replaced.", gt=0)
    ] = 30.0
    proxy_retries: Annotated[
        int,
        setting(
            "Times Ray's proxy sends a request again when the replica serving it died before answering (scoring "
            "is a pure function of the request); after that the client gets a 503.",
            ge=0,
        ),
    ] = 1
    ray_num_cpus: Annotated[
        PositiveInt | None, setting("CPUs of the local Ray this command starts; unset: every CPU.")
    ] = None
    ray_object_store_bytes: Annotated[
        Annotated[int, msgspec.Meta(ge=78_643_200)] | None,
        setting("Object store of the local Ray (requests do not use it); unset: Ray's default."),
    ] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.autoscale is not None:
            low, high = self.autoscale_bounds
            if high < 1 or low > high:
                raise ValueError(f"autoscale: {self.autoscale!r} must be MIN:MAX with MIN <= MAX and MAX >= 1")

    @property
    def autoscale_bounds(self) -> tuple[int, int]:
        """(MIN, MAX) of `autoscale`."""
        if self.autoscale is None:
            return self.replicas, self.replicas
        low, high = self.autoscale.split(":")
        return int(low), int(high)
