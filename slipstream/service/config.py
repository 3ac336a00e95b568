"""The service's configuration: every setting, its default and its documentation.

Sources, highest precedence first: command-line flags, environment variables
(`SLIPSTREAM_<SETTING>`, plus the Takeoff aliases below), a TOML or YAML config
file, defaults. Group settings given on the command line or in the environment
apply to every consumer group; a config file can set them per group.

The flag and variable names are derived from the field names here, so this
module is the single place a setting is defined and documented.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from slipstream.defaults import DEFAULT_ARTIFACT_DIR, DEFAULT_CONSUMER_GROUP, DEFAULT_PORT

ENV_PREFIX = "SLIPSTREAM_"
# Takeoff's names for the same settings, so a Takeoff deployment's environment
# works unchanged. A SLIPSTREAM_ variable wins over its alias.
TAKEOFF_ENV_ALIASES = {
    "TAKEOFF_MAX_BATCH_SIZE": "max_batch_size",
    "TAKEOFF_BATCH_DURATION_MILLIS": "batch_duration_millis",
}


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


class GroupSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One consumer group: one model artifact behind its own batcher."""

    artifact: Annotated[str, _doc("Export artifact directory to serve.")] = str(DEFAULT_ARTIFACT_DIR)
    device: Annotated[
        Literal["auto", "tensorrt", "cuda", "cpu"],
        _doc("Execution device: auto (TensorRT, else CUDA, else CPU) or a strict choice."),
    ] = "auto"
    variant: Annotated[
        str | None,
        _doc("Model variant (fp32, int8, fp16); unset lets the engine choose for the device."),
    ] = None
    max_batch_size: Annotated[
        int | None,
        _doc("Most items in one engine batch; unset uses the engine's default (32). "
             "Alias TAKEOFF_MAX_BATCH_SIZE."),
    ] = None
    max_batch_tokens: Annotated[
        int | None,
        _doc("Most padded tokens (items x bucket length) in one batch; unset means no limit."),
    ] = None
    batch_duration_millis: Annotated[
        float,
        _doc("Wait bound: an item that has waited this long is served before fuller buckets. "
             "An idle engine never waits. Alias TAKEOFF_BATCH_DURATION_MILLIS."),
    ] = 10.0
    max_queue_tokens: Annotated[
        int,
        _doc("Backpressure: most tokens queued for this group; past it requests get 429. "
             "The default holds one largest request (256 items x 512 tokens)."),
    ] = 131_072
    max_items_per_request: Annotated[
        int, _doc("Most texts or pairs in one request; more gets 413.")
    ] = 256
    buckets: Annotated[
        list[int] | None,
        _doc("Sequence-length bucket edges (comma-separated on the command line); "
             "unset uses the engine's edges for its device."),
    ] = None
    pad_to: Annotated[
        Literal["auto", "bucket", "longest"],
        _doc("Pad each batch to its bucket's edge (fixed shapes, all warmed up: what GPU engines "
             "need) or only to its longest item (a CPU runs any shape, and padding is pure waste "
             "there). auto: longest on CPU, bucket on GPU."),
    ] = "auto"
    truncate: Annotated[
        bool,
        _doc("Truncate over-long inputs by default (a request's `truncate` overrides it)."),
    ] = True
    intra_op_threads: Annotated[
        int | None, _doc("CPU engine threads inside one run; unset uses the engine's default (1).")
    ] = None
    parallel_runs: Annotated[
        int | None,
        _doc("CPU batches run at once, each on its own thread; unset uses the engine's default "
             "(physical cores / intra_op_threads)."),
    ] = None
    wide_from_length: Annotated[
        int | None,
        _doc("CPU: batches padded to at least this many tokens run alone with every core "
             "(they parallelise well and set the tail latency); 0 = never; unset uses the "
             "engine's default (128)."),
    ] = None
    cache_dir: Annotated[
        str | None, _doc("Directory for TensorRT engine and timing caches.")
    ] = None


class ServiceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The HTTP service and the consumer groups it serves."""

    host: Annotated[str, _doc("Address to listen on.")] = "0.0.0.0"
    port: Annotated[int, _doc("Port to listen on.")] = DEFAULT_PORT
    api_key: Annotated[
        str | None,
        _doc("Require `Authorization: Bearer <key>` on every route but /health and /ready."),
    ] = None
    max_body_bytes: Annotated[int, _doc("Largest request body accepted; more gets 413.")] = (
        8 * 1024 * 1024
    )
    shutdown_timeout_s: Annotated[
        float, _doc("On SIGTERM, how long queued work may take to drain before exit.")
    ] = 30.0
    tokenizer_threads: Annotated[
        int, _doc("Threads that tokenize (the Rust tokenizer releases the GIL).")
    ] = 1
    inline_tokenize_chars: Annotated[
        int,
        _doc("Requests of at most 8 texts totalling at most this many characters are tokenized "
             "on the event loop: for short texts that takes less time than handing them to the "
             "tokenizer thread and back. 0 sends every request to the tokenizer thread."),
    ] = 256
    tokenizer_parallelism: Annotated[
        bool,
        _doc("Let the Rust tokenizer spread one batch over its own thread pool "
             "(TOKENIZERS_PARALLELISM). Off: waking that pool costs more latency than it "
             "saves when the engine already uses every core."),
    ] = False
    access_log: Annotated[bool, _doc("Log every request (off: it costs CPU under load).")] = False
    log_level: Annotated[
        Literal["critical", "error", "warning", "info", "debug"], _doc("Log level.")
    ] = "info"
    groups: Annotated[
        dict[str, GroupSettings],
        _doc("Consumer groups by name; `slipstream serve DIR` makes one named `primary`."),
    ] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, not {self.port}")
        if self.max_body_bytes < 1:
            raise ConfigError("max_body_bytes must be positive")
        if self.tokenizer_threads < 1:
            raise ConfigError("tokenizer_threads must be at least 1")
        if self.inline_tokenize_chars < 0:
            raise ConfigError("inline_tokenize_chars must be >= 0")
        for name, group in self.groups.items():
            _check_group(name, group)


def _check_group(name: str, group: GroupSettings) -> None:
    def positive(field: str, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ConfigError(f"group {name!r}: {field} must be positive, not {value}")

    positive("max_batch_size", group.max_batch_size)
    positive("max_batch_tokens", group.max_batch_tokens)
    positive("max_queue_tokens", group.max_queue_tokens)
    positive("max_items_per_request", group.max_items_per_request)
    positive("intra_op_threads", group.intra_op_threads)
    positive("parallel_runs", group.parallel_runs)
    if group.wide_from_length is not None and group.wide_from_length < 0:
        raise ConfigError(f"group {name!r}: wide_from_length must be >= 0, not {group.wide_from_length}")
    if group.batch_duration_millis < 0:
        raise ConfigError(f"group {name!r}: batch_duration_millis must be >= 0")
    if group.buckets is not None:
        edges = group.buckets
        if not edges or any(e <= 0 for e in edges) or sorted(set(edges)) != edges:
            raise ConfigError(f"group {name!r}: buckets must be ascending positive lengths, not {edges}")


SERVICE_FIELDS = tuple(f.name for f in msgspec.structs.fields(ServiceSettings) if f.name != "groups")
GROUP_FIELDS = tuple(f.name for f in msgspec.structs.fields(GroupSettings))


def describe_fields(struct_type: type[msgspec.Struct]) -> list[tuple[str, str, str]]:
    """(name, default, description) per field, for --help and the docs."""
    info = msgspec.inspect.type_info(struct_type)
    rows = []
    for field in info.fields:  # type: ignore[attr-defined]
        description = ""
        field_type = field.type
        if isinstance(field_type, msgspec.inspect.Metadata):
            description = (field_type.extra_json_schema or {}).get("description", "")
        default = field.default if field.default is not msgspec.inspect.NODEFAULT else None
        rows.append((field.name, repr(default), description))
    return rows


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML file (or YAML, when PyYAML is installed) as a plain mapping."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_bytes()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ModuleNotFoundError:
            raise ConfigError(f"{path}: YAML needs PyYAML (pip install pyyaml); or use TOML") from None
        data = yaml.safe_load(text) or {}
    else:
        try:
            data = tomllib.loads(text.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _split_list(value: Any) -> Any:
    """`"8,16,32"` -> [8, 16, 32] for list settings given as one string."""
    if isinstance(value, str):
        return [int(part) for part in value.replace(" ", "").split(",") if part]
    return value


def overrides_from_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(service overrides, group overrides) from SLIPSTREAM_* and Takeoff variables."""
    service: dict[str, Any] = {}
    group: dict[str, Any] = {}
    for alias, field in TAKEOFF_ENV_ALIASES.items():
        if alias in environ:
            group[field] = environ[alias]
    for field in SERVICE_FIELDS:
        if env_name(field) in environ:
            service[field] = environ[env_name(field)]
    for field in GROUP_FIELDS:
        # SLIPSTREAM_ARTIFACT names one group's artifact (see build_settings), not every group's.
        if field != "artifact" and env_name(field) in environ:
            group[field] = environ[env_name(field)]
    return service, group


def build_settings(
    *,
    artifact: str | None = None,
    consumer_group: str = DEFAULT_CONSUMER_GROUP,
    config_file: Path | None = None,
    cli_service: Mapping[str, Any] | None = None,
    cli_group: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceSettings:
    """Merge the sources in precedence order and validate the result.

    `artifact` (the positional ARTIFACT_DIR or SLIPSTREAM_ARTIFACT) defines the
    group `consumer_group` when given; with neither it nor a config file, that
    group serves the default artifact.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    config_path = config_file or (Path(environ[env_name("config")]) if env_name("config") in environ else None)
    if config_path is not None:
        data = read_config_file(config_path)
        raw_groups = data.pop("groups", {}) or {}
        if not isinstance(raw_groups, dict):
            raise ConfigError(f"{config_path}: `groups` must be a table of consumer groups")
        merged.update(data)
        groups = {str(name): dict(values or {}) for name, values in raw_groups.items()}

    env_service, env_group = overrides_from_env(environ)
    artifact = artifact or environ.get(env_name("artifact"))
    if artifact is not None:
        groups.setdefault(consumer_group, {})["artifact"] = artifact
    if not groups:
        groups[consumer_group] = {}

    merged.update(env_service)
    merged.update({k: v for k, v in (cli_service or {}).items() if v is not None})
    group_overrides = dict(env_group)
    group_overrides.update({k: v for k, v in (cli_group or {}).items() if v is not None})
    for values in groups.values():
        values.update(group_overrides)
        if "buckets" in values:
            values["buckets"] = _split_list(values["buckets"])
    merged["groups"] = groups
    try:
        return msgspec.convert(merged, ServiceSettings, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def settings_as_toml_like(settings: ServiceSettings) -> str:
    """The effective configuration as printed at start (the API key masked)."""
    data = msgspec.to_builtins(settings)
    if data.get("api_key"):
        data["api_key"] = "***"
    lines = []
    for key in SERVICE_FIELDS:
        lines.append(f"{key} = {msgspec.json.encode(data.get(key)).decode()}")
    for name, group in data["groups"].items():
        lines.append(f"[groups.{name}]")
        for key in GROUP_FIELDS:
            lines.append(f"{key} = {msgspec.json.encode(group.get(key)).decode()}")
    return "\n".join(lines)
