"""What a benchmark run measures: profiles (quick, full) and server configurations."""

from __future__ import annotations

from typing import Literal

import msgspec

from benchmarks.workloads import RerankSpec, SingleTextSpec


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One server under test. Slipstream settings go through its SLIPSTREAM_* variables."""

    name: str  # short id used in files and tables
    label: str  # what the tables and plots call it
    kind: Literal["slipstream", "pipeline"]
    description: str
    env: dict[str, str] = {}
    # Closed-loop concurrencies and open-loop rate fractions for this config
    # (None: the profile's). Baselines get fewer points to keep the run short.
    concurrencies: list[int] | None = None
    rate_fractions: list[float] | None = None
    single: bool = True  # run the single-text points (closed and open loop)
    rerank: bool = False  # also run the rerank workload against it
    rerank_concurrencies: list[int] | None = None  # None: the profile's
    idle: bool = False  # also measure idle latency (sequential requests)


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    name: Literal["quick", "full"]
    single: SingleTextSpec
    rerank: RerankSpec
    warmup_s: float
    duration_s: float
    concurrencies: list[int]  # closed loop, single texts
    # Open-loop Poisson rates as fractions of the config's best closed-loop
    # throughput: below, at and past saturation.
    rate_fractions: list[float]
    rerank_concurrencies: list[int]
    idle_requests: int
    # The concurrency at which served and offline throughput are compared (the service issue's 32).
    compare_concurrency: int = 32
    slo_p99_ms: float = 100.0
    offline_batch_size: int = 8  # and the engine's largest batch
    offline_texts: int = 600
    offline_rounds: int = 3
    ready_timeout_s: float = 600.0


FULL = Profile(
    name="full",
    single=SingleTextSpec(count=2000),
    rerank=RerankSpec(count=120),
    warmup_s=2.0,
    duration_s=8.0,
    concurrencies=[1, 4, 16, 32, 64],
    rate_fractions=[0.25, 0.5, 0.7, 0.85, 1.0, 1.15],
    # 1 and 8 clients: where the CPU default variant is held to fp32's rerank speed.
    rerank_concurrencies=[1, 8, 16],
    idle_requests=200,
)

QUICK = Profile(
    name="quick",
    single=SingleTextSpec(count=300),
    rerank=RerankSpec(count=20),
    warmup_s=0.3,
    duration_s=1.5,
    concurrencies=[1, 32],
    rate_fractions=[0.5, 1.2],
    rerank_concurrencies=[4],
    idle_requests=20,
    offline_texts=100,
    offline_rounds=1,
    ready_timeout_s=180.0,
)


def server_configs(profile: Profile, include_pipeline: bool) -> list[ServerConfig]:
    few_rates = [0.3, 0.6, 0.9, 1.2] if profile.name == "full" else [1.2]
    few_concurrencies = [1, profile.compare_concurrency]
    configs = [
        ServerConfig(
            name="slipstream",
            label="Slipstream",
            kind="slipstream",
            description="length-bucketed dynamic batching, default settings",
            rerank=True,
            idle=True,
        ),
        ServerConfig(
            name="slipstream-batch1",
            label="Slipstream, batching off",
            kind="slipstream",
            description="max_batch_size=1: every request runs alone (padded as the defaults pad)",
            env={"SLIPSTREAM_MAX_BATCH_SIZE": "1"},
            concurrencies=few_concurrencies,
            rate_fractions=few_rates,
        ),
        ServerConfig(
            name="slipstream-no-buckets",
            label="Slipstream, no length buckets",
            kind="slipstream",
            description=(
                "batching without length buckets: one queue for all lengths, each batch padded to its longest item"
            ),
            # SLIPSTREAM_BUCKETS is filled in with the model's maximum length at run time.
            env={"SLIPSTREAM_BUCKETS": "max", "SLIPSTREAM_PAD_TO": "longest"},
            concurrencies=few_concurrencies,
            rate_fractions=few_rates,
        ),
    ]
    if profile.name == "full":
        configs.append(
            ServerConfig(
                name="slipstream-fp32",
                label="Slipstream, fp32 variant",
                kind="slipstream",
                description="the default settings with the fp32 variant: what the CPU default variant is held to",
                env={"SLIPSTREAM_VARIANT": "fp32"},
                single=False,
                rerank=True,
                rerank_concurrencies=[1, 8],
            )
        )
    if include_pipeline:
        configs.append(
            ServerConfig(
                name="pipeline",
                label="transformers pipeline (PyTorch)",
                kind="pipeline",
                description=(
                    'transformers pipeline("text-classification") in PyTorch behind Litestar, one request at a time'
                ),
                concurrencies=few_concurrencies,
                rate_fractions=few_rates,
                # A rerank request takes the pipeline seconds: too slow for the quick profile's windows.
                rerank=profile.name == "full",
                # Seconds per rerank request: more clients would only queue (and drain) for longer.
                rerank_concurrencies=[1, 4],
            )
        )
    return configs
