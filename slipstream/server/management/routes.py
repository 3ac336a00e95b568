"""The management routes `takeoff-client` calls: list, add, describe and remove readers; status."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, delete, get, post

from slipstream.server.management.reader_config import ReaderConfigBody, reader_request
from slipstream.server.management.schemas import (
    ReaderConfigResponse,
    ReaderCreated,
    ReaderInfo,
    StatusResponse,
    errors,
    reader_config,
    reader_created,
    reader_info,
    status,
)
from slipstream.server.state import service_state


@get("/reader_groups", summary="Readers by consumer group", responses=errors(401))
async def reader_groups(request: Request[Any, Any, Any]) -> dict[str, list[ReaderInfo]]:
    """Every reader, by consumer group: its id, model, device, variant, state and whether it is ready."""
    registry = service_state(request).readers
    return {name: [reader_info(reader) for reader in registry.in_group(name)] for name in registry.group_names()}


@post("/reader", status_code=201, summary="Add a reader", responses=errors(400, 401, 409, 422, 503))
async def create_reader(request: Request[Any, Any, Any], data: ReaderConfigBody) -> ReaderCreated:
    """Answers at once; the reader exports (a hub id or save_pretrained directory), loads and warms
    up in the background. Poll `/reader_groups` or `/status` until it is `ready`. Until then its
    group answers 503, unless another of its readers serves."""
    del data  # checked against the schema already; the raw body tells which fields were given
    state = service_state(request)
    parsed = reader_request(await request.json(), state.settings.reader_defaults)
    return reader_created(await state.readers.add(parsed))


@delete(
    "/reader/{reader_id:str}",
    status_code=204,
    summary="Remove a reader (after it drains)",
    responses=errors(401, 404),
)
async def delete_reader(request: Request[Any, Any, Any], reader_id: str) -> None:
    """It stops taking requests at once; its queued and running work finishes (what is left after
    `shutdown_timeout_s` fails with 503), then its engine is released. Answers when that is done.
    A group left without readers answers 404."""
    await service_state(request).readers.remove(reader_id)


@get("/config/{reader_id:str}", summary="A reader's configuration", responses=errors(401, 404))
async def get_config(request: Request[Any, Any, Any], reader_id: str) -> ReaderConfigResponse:
    """Its effective settings, the config it was given, and a summary of its artifact's manifest."""
    return reader_config(service_state(request).readers.get(reader_id))


@get("/status", summary="Version, uptime, and every group's readers", responses=errors(401))
async def get_status(request: Request[Any, Any, Any]) -> StatusResponse:
    """Every group and reader with its state, device and queue depth."""
    return status(service_state(request), time.time())


ROUTES = [reader_groups, create_reader, delete_reader, get_config, get_status]
