"""What the management API answers, in the shapes `takeoff-client` reads."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar.openapi import ResponseSpec
from msgspec import Meta

from slipstream import __version__
from slipstream.batching.settings import GroupSettings
from slipstream.manifest import Manifest, load_manifest
from slipstream.server.errors import error_specs
from slipstream.server.readers import Reader
from slipstream.server.state import ServiceState

BACKEND = "onnxruntime"
# Takeoff's kind of model: every Slipstream model (classifier, cross-encoder reranker) is a classifier.
MODEL_TYPE = "CLASSIFICATION"


class ReaderInfo(msgspec.Struct, kw_only=True):
    reader_id: str
    consumer_group: str
    model_name: Annotated[str, Meta(description="As given: an artifact directory, model directory or hub id.")]
    model_type: Annotated[str, Meta(description=f"Takeoff's model kind: always {MODEL_TYPE!r}.")]
    backend: str
    device: Annotated[
        str, Meta(description="The device it runs on once loaded (cpu, cuda, tensorrt); before, the choice.")
    ]
    variant: Annotated[str | None, Meta(description="The model variant it runs (fp32, int8, fp16) once loaded.")]
    architecture: str | None
    state: Annotated[str, Meta(description='"exporting", "loading", "ready", "draining" or "failed: <reason>".')]
    ready: Annotated[bool, Meta(description="It takes requests.")]
    pids: Annotated[list[int], Meta(description="Processes it runs in: the server's, and an export's while it runs.")]
    origin: Annotated[str, Meta(description='"config" (command line or config file) or "management" (this API).')]
    created_at: str


class ReaderCreated(ReaderInfo, kw_only=True):
    ignored_fields: Annotated[list[str], Meta(description="Takeoff's fields that were given and do not apply here.")]


class VariantSummary(msgspec.Struct, kw_only=True):
    file: str
    size_bytes: int
    sha256: str
    intended_devices: list[str]
    validation_passed: bool


class ManifestSummary(msgspec.Struct, kw_only=True):
    source_model: str
    source_revision: str | None
    architecture: str
    model_type: str
    labels: list[str]
    num_labels: int
    problem_type: str
    activation: str
    max_sequence_length: int
    variants: dict[str, VariantSummary]
    versions: dict[str, str]
    created_at: str


class ReaderConfigResponse(msgspec.Struct, kw_only=True):
    reader_id: str
    consumer_group: str
    model_name: str
    device: str
    max_batch_size: int
    batch_duration_millis: float
    max_sequence_length: Annotated[
        int | None, Meta(description="The longest input it takes (once its model is known; else the setting).")
    ]
    state: str
    settings: Annotated[GroupSettings, Meta(description="Its effective group settings.")]
    config: Annotated[
        dict[str, Any], Meta(description="The reader config as given (no secrets); {} from the config file.")
    ]
    ignored_fields: list[str]
    manifest: Annotated[ManifestSummary | None, Meta(description="Its artifact's manifest, once it has one.")]


class ReaderStatus(msgspec.Struct, kw_only=True):
    reader_id: str
    model_name: str
    state: str
    ready: bool
    device: str
    variant: str | None
    queue_items: int
    queue_tokens: int


class GroupStatus(msgspec.Struct, kw_only=True):
    ready: Annotated[bool, Meta(description="At least one of its readers takes requests.")]
    readers: list[ReaderStatus]


class StatusResponse(msgspec.Struct, kw_only=True):
    version: str
    started_at: str
    uptime_s: float
    ready: Annotated[bool, Meta(description="What /ready on the inference port says.")]
    shutting_down: bool
    readers: int
    max_readers: int
    groups: dict[str, GroupStatus]


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _device(reader: Reader) -> str:
    return reader.model.description.device if reader.model is not None else reader.settings.device


def _variant(reader: Reader) -> str | None:
    return reader.model.description.variant if reader.model is not None else reader.settings.variant


def _manifest(reader: Reader) -> Manifest | None:
    if reader.model is not None:
        return reader.model.manifest
    if reader.source is not None and reader.source.manifest is not None:
        return reader.source.manifest
    if reader.exported_artifact is not None:
        try:
            return load_manifest(reader.exported_artifact)
        except ValueError:
            return None
    return None


def reader_info(reader: Reader) -> ReaderInfo:
    manifest = _manifest(reader)
    pids = [os.getpid()] + ([reader.export_pid] if reader.export_pid is not None else [])
    return ReaderInfo(
        reader_id=reader.reader_id,
        consumer_group=reader.consumer_group,
        model_name=reader.model_name,
        model_type=MODEL_TYPE,
        backend=BACKEND,
        device=_device(reader),
        variant=_variant(reader),
        architecture=manifest.architecture if manifest is not None else None,
        state=reader.state,
        ready=reader.ready,
        pids=pids,
        origin=reader.origin,
        created_at=_timestamp(reader.created_at),
    )


def reader_created(reader: Reader) -> ReaderCreated:
    return ReaderCreated(**msgspec.structs.asdict(reader_info(reader)), ignored_fields=reader.ignored_fields)


def manifest_summary(manifest: Manifest) -> ManifestSummary:
    return ManifestSummary(
        source_model=manifest.source.model,
        source_revision=manifest.source.revision,
        architecture=manifest.architecture,
        model_type=manifest.model_type,
        labels=manifest.labels,
        num_labels=manifest.num_labels,
        problem_type=manifest.problem_type,
        activation=manifest.activation,
        max_sequence_length=manifest.max_sequence_length,
        variants={
            name: VariantSummary(
                file=v.file,
                size_bytes=v.size_bytes,
                sha256=v.sha256,
                intended_devices=v.intended_devices,
                validation_passed=v.validation.passed,
            )
            for name, v in manifest.variants.items()
        },
        versions=manifest.versions,
        created_at=manifest.created_at,
    )


def reader_config(reader: Reader) -> ReaderConfigResponse:
    settings = reader.settings
    manifest = _manifest(reader)
    max_length = settings.longest_input(manifest.max_sequence_length) if manifest else settings.max_sequence_length
    return ReaderConfigResponse(
        reader_id=reader.reader_id,
        consumer_group=reader.consumer_group,
        model_name=reader.model_name,
        device=settings.device,
        max_batch_size=settings.max_batch_size,
        batch_duration_millis=settings.batch_duration_millis,
        max_sequence_length=max_length,
        state=reader.state,
        settings=settings,
        config=reader.config,
        ignored_fields=reader.ignored_fields,
        manifest=manifest_summary(manifest) if manifest is not None else None,
    )


def reader_status(reader: Reader) -> ReaderStatus:
    queues = reader.model.batcher.queues if reader.model is not None else None
    return ReaderStatus(
        reader_id=reader.reader_id,
        model_name=reader.model_name,
        state=reader.state,
        ready=reader.ready,
        device=_device(reader),
        variant=_variant(reader),
        queue_items=queues.items if queues is not None else 0,
        queue_tokens=queues.tokens if queues is not None else 0,
    )


def status(state: ServiceState, now: float) -> StatusResponse:
    registry = state.readers
    groups = {
        name: GroupStatus(
            ready=any(reader.ready for reader in registry.in_group(name)),
            readers=[reader_status(reader) for reader in registry.in_group(name)],
        )
        for name in registry.group_names()
    }
    return StatusResponse(
        version=__version__,
        started_at=_timestamp(state.started_at),
        uptime_s=round(now - state.started_at, 3),
        ready=state.ready,
        shutting_down=state.shutting_down,
        readers=len(registry.by_id),
        max_readers=state.settings.max_readers,
        groups=groups,
    )


_ERRORS = {
    400: "the body is not JSON",
    401: "management API key missing or wrong",
    404: "unknown reader id (the known ones are listed)",
    409: "max_readers reached, or the model's labels differ from its consumer group's",
    422: "an invalid reader config (the field is named), or a model_name that cannot be served",
    503: "the service is shutting down",
}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a management route can answer."""
    return error_specs(*statuses, descriptions=_ERRORS)
