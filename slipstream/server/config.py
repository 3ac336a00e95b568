"""Where the service's settings come from, merged in precedence order.

Highest first: command-line flags, environment variables (`SLIPSTREAM_<NAME>`,
nested ones `SLIPSTREAM_CPU__INTRA_OP_THREADS`, plus Takeoff's names below), a
TOML or YAML config file, the defaults. Group settings given as flags or
environment variables apply to every consumer group; a config file can set
them per group (`[groups.<name>]`, `[groups.<name>.cpu]`, ...).

Names, types, defaults and help all come from the settings definitions
(`ServiceSettings`, `GroupSettings`) through `slipstream.settings`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

import msgspec

from slipstream.batching.settings import GroupSettings
from slipstream.defaults import DEFAULT_CONSUMER_GROUP
from slipstream.server.settings import ServiceSettings
from slipstream.settings import ENV_PREFIX, Leaf, deep_merge, env_overrides, leaves, set_path, text_value

# Takeoff's names for the same settings, so a Takeoff deployment's environment
# works unchanged. A SLIPSTREAM_ variable wins over its alias.
TAKEOFF_ENV_ALIASES = {
    "TAKEOFF_MAX_BATCH_SIZE": "max_batch_size",
    "TAKEOFF_BATCH_DURATION_MILLIS": "batch_duration_millis",
}
CONFIG_ENV = ENV_PREFIX + "CONFIG"
ARTIFACT_ENV = ENV_PREFIX + "ARTIFACT"


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


# Tables of group settings inside the service's settings: set per group, or in the config file.
_GROUP_TABLES = ("groups", "reader_defaults")


def service_leaves() -> list[Leaf]:
    """Settings of the service itself (the groups, and the management API's reader defaults, are group settings)."""
    return [leaf for leaf in leaves(ServiceSettings) if leaf.path[0] not in _GROUP_TABLES]


def group_leaves(*, with_artifact: bool = True) -> list[Leaf]:
    """Settings of a consumer group. `artifact` names one group's model, so flags and variables
    that apply to every group leave it out."""
    return [leaf for leaf in leaves(GroupSettings) if with_artifact or leaf.path != ("artifact",)]


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML file (or YAML, when PyYAML is installed) as a plain mapping."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_bytes()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
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


def overrides_from_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(service overrides, every-group overrides) from SLIPSTREAM_* and Takeoff variables."""
    group: dict[str, Any] = {}
    by_key = {leaf.key: leaf for leaf in group_leaves(with_artifact=False)}
    for alias, key in TAKEOFF_ENV_ALIASES.items():
        if alias in environ:
            set_path(group, by_key[key].path, text_value(by_key[key], environ[alias]))
    group = deep_merge(group, env_overrides(by_key.values(), environ))
    return env_overrides(service_leaves(), environ), group


def build_settings(
    *,
    artifact: str | None = None,
    consumer_group: str = DEFAULT_CONSUMER_GROUP,
    config_file: Path | None = None,
    cli_service: Mapping[str, Any] | None = None,
    cli_group: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> ServiceSettings:
    """Merge the sources in precedence order and validate the result.

    `cli_service` and `cli_group` are nested mappings of the flags
    (`slipstream.settings.flag_overrides`); values may still be text, and None
    means not given.
    `artifact` (the positional ARTIFACT_DIR or SLIPSTREAM_ARTIFACT) defines the
    group `consumer_group` when given; with neither it nor a config file, that
    group serves the default artifact. `config` stands for a config file's
    contents already read (a Ray Serve config's `args`).
    """
    environ = os.environ if environ is None else environ
    service: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    config_path = config_file or (Path(environ[CONFIG_ENV]) if CONFIG_ENV in environ else None)
    data = deepcopy(dict(config)) if config is not None else read_config_file(config_path) if config_path else None
    if data is not None:
        raw_groups = data.pop("groups", {}) or {}
        if not isinstance(raw_groups, dict):
            raise ConfigError(f"{config_path or 'the configuration'}: `groups` must be a table of consumer groups")
        service = data
        groups = {str(name): dict(values or {}) for name, values in raw_groups.items()}

    env_service, env_group = overrides_from_env(environ)
    artifact = artifact or environ.get(ARTIFACT_ENV)
    if artifact is not None:  # like a flag, it wins over the file, each reader's table included
        table = groups.setdefault(consumer_group, {})
        table["artifact"] = artifact
        for reader in table.get("readers") or []:
            if isinstance(reader, dict):
                reader["artifact"] = artifact
    if not groups:
        groups[consumer_group] = {}

    service = deep_merge(deep_merge(service, env_service), _given(cli_service or {}))
    every_group = deep_merge(env_group, _given(cli_group or {}))
    service["groups"] = {name: _with_overrides(values, every_group) for name, values in groups.items()}
    service["reader_defaults"] = deep_merge(service.get("reader_defaults") or {}, every_group)
    try:
        settings = msgspec.convert(service, ServiceSettings, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    readers = 0
    for name, group in settings.groups.items():
        try:
            readers += len(group.reader_settings())
        except (msgspec.ValidationError, ValueError) as exc:
            raise ConfigError(f"invalid configuration: groups.{name}.readers: {exc}") from None
    if readers > settings.max_readers:
        raise ConfigError(
            f"the configuration defines {readers} readers, more than max_readers ({settings.max_readers})"
        )
    return settings


def _with_overrides(group: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A group's table with flag and environment overrides applied, to each of its readers' tables too."""
    merged = deep_merge(group, overrides)
    readers = group.get("readers")
    if isinstance(readers, list):
        merged["readers"] = [deep_merge(dict(r), overrides) if isinstance(r, Mapping) else r for r in readers]
    return merged


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flags that were given (None: not given), nested mappings included."""
    return {k: _given(v) if isinstance(v, Mapping) else v for k, v in values.items() if v is not None}


def settings_as_toml_like(settings: ServiceSettings) -> str:
    """The effective configuration as printed at start, in config-file form (the API key masked)."""
    data = msgspec.to_builtins(settings)
    for secret in ("api_key", "management_api_key"):
        if data.get(secret):
            data[secret] = "***"
    groups = data.pop("groups")
    reader_defaults = data.pop("reader_defaults")

    def table(name: str, values: dict[str, Any]) -> list[str]:
        plain = [
            f"{key} = {msgspec.json.encode(value).decode()}"
            for key, value in values.items()
            if not isinstance(value, dict)
        ]
        nested = [
            line
            for key, value in values.items()
            if isinstance(value, dict)
            for line in table(f"{name}.{key}" if name else key, value)
        ]
        return [f"[{name}]", *plain, *nested] if name else [*plain, *nested]

    lines = table("", data)
    for name, group in groups.items():
        if not group["readers"]:
            del group["readers"]
        lines.extend(table(f"groups.{name}", group))
    if settings.management_listen_port is not None:
        lines.extend(table("reader_defaults", reader_defaults))
    return "\n".join(lines)
