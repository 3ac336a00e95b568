"""Operations routes: liveness, readiness, what is served (/info) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from slipstream import __version__
from slipstream.batching.consumer_group import ConsumerGroup
from slipstream.batching.errors import Unavailable
from slipstream.batching.group import ModelGroup
from slipstream.manifest import Fidelity, Invariance, Manifest
from slipstream.server.errors import error_specs
from slipstream.server.state import service_state


class HealthResponse(msgspec.Struct):
    status: str


class ReadyResponse(msgspec.Struct):
    ready: bool
    groups: dict[str, bool]


class BatchingInfo(msgspec.Struct, kw_only=True):
    buckets: list[int]
    max_batch_size: int
    max_batch_tokens: int | None
    batch_duration_millis: float
    max_queue_tokens: int
    max_items_per_request: int
    pad_to: str
    truncate: bool
    long_text: str
    chunk_window: int
    chunk_stride: int | None
    chunk_aggregate: str
    max_chunks_per_input: int


class VariantInfo(msgspec.Struct, kw_only=True):
    """One variant the artifact carries, as its export measured it."""

    execution: str  # "batched" or "per_item" (each item run alone, unpadded)
    # Against fp32 on the export's real-text set; None for fp32 itself (the reference).
    fidelity: Fidelity | None
    # Served only when asked for by name (`--variant`): it misses the fidelity bars, or predates them.
    opt_in: bool
    invariance: list[Invariance]


class ReaderDetails(msgspec.Struct, kw_only=True):
    reader_id: str
    model: str
    architecture: str
    labels: list[str]
    num_labels: int
    problem_type: str
    activation: str
    max_sequence_length: int
    variant: str
    device: str
    # The served variant's guarantee on this device: how far an item's logits may move with its batch.
    batch_invariance: Invariance | None = None
    # The served variant against fp32 (None when it is fp32).
    fidelity: Fidelity | None = None
    variants: dict[str, VariantInfo] = {}
    providers: list[str]
    engine_options: dict[str, str]
    batching: BatchingInfo
    ready: bool
    versions: dict[str, str]


class GroupInfo(ReaderDetails, kw_only=True):
    """A consumer group: its first reader's details (as before groups had several), and every reader's."""

    consumer_group: str
    readers: list[ReaderDetails]


class InfoResponse(msgspec.Struct, kw_only=True):
    version: str
    groups: dict[str, GroupInfo]


@get("/health", summary="Alive", opt={"public": True})
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@get(
    "/ready",
    summary="Ready: every reader there was at start warmed up every bucket (503 until then)",
    opt={"public": True},
    responses=error_specs(503),
)
async def ready(request: Request[Any, Any, Any]) -> ReadyResponse:
    return readiness(request)


def readiness(request: Request[Any, Any, Any]) -> ReadyResponse:
    """The answer of every readiness route (/ready, SageMaker's /ping, TEI's GET /), or 503."""
    state = service_state(request)
    if not state.ready:
        reason = "shutting down" if state.shutting_down else (state.readers.start_problem() or "warming up")
        raise Unavailable(f"not ready: {reason}")
    groups = state.groups
    return ReadyResponse(
        ready=True,
        groups={name: bool(name in groups and groups[name].serving()) for name in state.readers.group_names()},
    )


def variant_infos(manifest: Manifest) -> dict[str, VariantInfo]:
    return {
        name: VariantInfo(
            execution="per_item" if variant.runs_per_item else "batched",
            fidelity=variant.fidelity,
            opt_in=name != "fp32" and (variant.fidelity is None or not variant.fidelity.meets_bars),
            invariance=variant.invariance,
        )
        for name, variant in manifest.variants.items()
    }


def reader_details(reader: ModelGroup) -> ReaderDetails:
    manifest, description, settings = reader.manifest, reader.description, reader.settings
    served = manifest.variants.get(description.variant)
    return ReaderDetails(
        reader_id=reader.reader_id,
        model=manifest.source.model,
        architecture=manifest.architecture,
        labels=manifest.labels,
        num_labels=manifest.num_labels,
        problem_type=manifest.problem_type,
        activation=manifest.activation,
        max_sequence_length=reader.max_length,
        variant=description.variant,
        device=description.device,
        batch_invariance=None if served is None else served.invariance_on(description.device),
        fidelity=None if served is None else served.fidelity,
        variants=variant_infos(manifest),
        providers=description.providers,
        engine_options=description.options,
        batching=BatchingInfo(
            buckets=reader.edges,
            max_batch_size=reader.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            batch_duration_millis=settings.batch_duration_millis,
            max_queue_tokens=settings.max_queue_tokens,
            max_items_per_request=settings.max_items_per_request,
            pad_to=reader.pad_to,
            truncate=settings.truncate,
            long_text=settings.default_long_text(),
            chunk_window=reader.chunking.window,
            chunk_stride=settings.chunk_stride,
            chunk_aggregate=reader.chunk_aggregate,
            max_chunks_per_input=settings.max_chunks_per_input,
        ),
        ready=reader.ready and not reader.batcher.closing,
        versions={"slipstream": __version__, **manifest.versions},
    )


def group_info(group: ConsumerGroup) -> GroupInfo:
    readers = [reader_details(reader) for reader in group.readers]
    return GroupInfo(**msgspec.structs.asdict(readers[0]), consumer_group=group.name, readers=readers)


@get("/info", summary="Models, labels, devices and batching per consumer group and reader", responses=error_specs(401))
async def info(request: Request[Any, Any, Any]) -> InfoResponse:
    """Every consumer group with a loaded reader; readers still exporting or loading, and failed ones,
    are listed by the management API."""
    groups = service_state(request).groups
    return InfoResponse(version=__version__, groups={name: group_info(g) for name, g in groups.items() if g.readers})


@get(
    "/metrics",
    summary="Prometheus metrics (the text exposition format)",
    media_type=CONTENT_TYPE_LATEST,
    responses=error_specs(401),
)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(service_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [health, ready, info, metrics]
