"""A reader config as `POST /reader` takes it: Takeoff's fields and Slipstream's group settings.

Takeoff's `ReaderConfig` names the model (`model_name`), its `consumer_group`
and `device`, and batching knobs whose names Slipstream's group settings share
(`max_batch_size`, `batch_duration_millis`, `max_sequence_length`). Every other
group setting (`variant`, `buckets`, `cpu.parallel_runs`, ...) may be given
too. Takeoff's fields that mean nothing here (tensor parallelism, paged
attention, ...) are accepted and ignored, and the answer lists them;
`cuda_visible_devices` naming one GPU becomes `cuda.device_id`, and
`access_token` is handed to the export of a hub model. Any other key is
refused (422), every unknown one named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from slipstream.batching.errors import InvalidInput
from slipstream.batching.settings import GroupSettings
from slipstream.defaults import DEFAULT_CONSUMER_GROUP
from slipstream.manifest import ManifestError
from slipstream.server.model_sources import ModelSource, resolve_model
from slipstream.settings import deep_merge, optional_settings

# Takeoff's reader fields that do not apply to Slipstream, and why.
TAKEOFF_IGNORED: dict[str, str] = {
    "backend": "Slipstream's backend is ONNX Runtime",
    "redis_host": "requests are queued in the server process",
    "log_level": "the log level is a service setting (--log-level)",
    "tensor_parallel": "a reader runs on one device; add one reader per GPU instead",
    "quant_type": "an artifact's variants are its quantizations; choose one with `variant`",
    "nvlink_unavailable": "a generation-engine setting",
    "disable_static": "a generation-engine setting",
    "disable_cuda_graph": "see cuda.cuda_graphs",
    "cuda_graph_cache_capacity": "a generation-engine setting",
    "disable_paged_attention": "a generation-engine setting",
    "page_cache_size": "a generation-engine setting",
}
# Used, but not as group settings.
_ACCESS_TOKEN = "access_token"
_CUDA_VISIBLE_DEVICES = "cuda_visible_devices"
_CONSUMER_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_TAKEOFF_FIELDS: list[tuple[str, Any, Any]] = [
    (
        "model_name",
        Annotated[
            str,
            Meta(
                description="An export artifact directory; or a save_pretrained directory or Hugging Face hub id, "
                "exported first (in a child process) when this installation can export."
            ),
        ],
        msgspec.NODEFAULT,
    ),
    (
        "consumer_group",
        Annotated[str, Meta(description=f"The group it serves; empty or absent: {DEFAULT_CONSUMER_GROUP!r}.")]
        | UnsetType,
        UNSET,
    ),
    (
        _ACCESS_TOKEN,
        Annotated[str, Meta(description="Hugging Face token for exporting a gated or private hub model; never stored.")]
        | UnsetType,
        UNSET,
    ),
    (
        _CUDA_VISIBLE_DEVICES,
        Annotated[str | int, Meta(description="One GPU index: the reader's cuda.device_id.")] | UnsetType,
        UNSET,
    ),
    *(
        (name, Annotated[Any, Meta(description=f"Takeoff's; accepted and ignored: {why}.")], UNSET)
        for name, why in TAKEOFF_IGNORED.items()
    ),
]

# The body's schema (what OpenAPI shows and what a body is checked against): every group setting
# but `artifact` (that is `model_name`), each optional, and Takeoff's fields.
if TYPE_CHECKING:
    ReaderConfigBody = msgspec.Struct
else:
    ReaderConfigBody = optional_settings(GroupSettings, "ReaderConfig", exclude=["artifact"], extra=_TAKEOFF_FIELDS)
KNOWN_FIELDS = frozenset(ReaderConfigBody.__struct_fields__)


@dataclass(frozen=True)
class ReaderRequest:
    """A reader config, checked: what to serve, as which group, with which settings."""

    consumer_group: str
    model_name: str
    source: ModelSource
    # Effective settings; `artifact` is the source's directory (an exported model's is set once exported).
    settings: GroupSettings
    config: dict[str, Any]  # the body as given, without secrets: what /config shows and the readers file keeps
    ignored_fields: list[str]
    access_token: str | None


def validation_message(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int` - at `$.cpu.parallel_runs`" as "cpu.parallel_runs: Expected `int`"."""
    message, _, where = str(exc).rpartition(" - at `$")
    if not message:
        return str(exc)
    field = where.rstrip("`").lstrip(".")
    return f"{field}: {message}" if field else message


def reader_request(body: Any, defaults: GroupSettings) -> ReaderRequest:
    """Check a reader config and resolve its model; InvalidInput (422) naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidInput("a reader config is a JSON object")
    unknown = sorted(str(key) for key in body if key not in KNOWN_FIELDS)
    if unknown:
        hint = " (give the model as model_name)" if "artifact" in unknown else ""
        raise InvalidInput(
            f"unknown fields: {', '.join(unknown)}{hint}; a reader config takes Takeoff's fields and "
            "Slipstream's group settings (see the management API's /docs)"
        )
    try:
        given: dict[str, Any] = msgspec.to_builtins(msgspec.convert(body, ReaderConfigBody))
    except msgspec.ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from None
    model_name: str = given.pop("model_name")
    consumer_group = given.pop("consumer_group", "") or DEFAULT_CONSUMER_GROUP
    if not _CONSUMER_GROUP_NAME.match(consumer_group):
        raise InvalidInput("consumer_group: up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    access_token = given.pop(_ACCESS_TOKEN, None)
    ignored = sorted(name for name in TAKEOFF_IGNORED if given.pop(name, UNSET) is not UNSET)
    if _CUDA_VISIBLE_DEVICES in given:
        _set_device_id(given, given.pop(_CUDA_VISIBLE_DEVICES))
    source = resolve_model(model_name)
    values = deep_merge(msgspec.to_builtins(defaults), given)
    values["artifact"] = source.location
    try:
        settings = msgspec.convert(values, GroupSettings)
    except msgspec.ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from None
    if source.manifest is not None and settings.variant is not None:
        try:
            source.manifest.variant(settings.variant)
        except ManifestError as exc:
            raise InvalidInput(f"variant: {exc}") from None
    config = {key: value for key, value in body.items() if key != _ACCESS_TOKEN}
    return ReaderRequest(consumer_group, model_name, source, settings, config, ignored, access_token)


def _set_device_id(given: dict[str, Any], visible: str | int) -> None:
    text = str(visible).strip()
    if not text.isdigit():
        raise InvalidInput(
            f"cuda_visible_devices: {visible!r}; a reader runs on one GPU: give one index, and add one reader per GPU"
        )
    cuda = given.setdefault("cuda", {})
    if "device_id" in cuda and cuda["device_id"] != int(text):
        raise InvalidInput("cuda_visible_devices and cuda.device_id name different GPUs")
    cuda["device_id"] = int(text)
