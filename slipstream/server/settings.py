"""The HTTP service's settings, and the consumer groups it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from slipstream.batching.settings import GroupSettings
from slipstream.defaults import DEFAULT_PORT
from slipstream.settings import Settings, deep_merge, setting

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
# Where the management API exports models it is given as hub ids or save_pretrained directories.
DEFAULT_EXPORT_DIR = Path.home() / ".cache" / "slipstream" / "exports"


class GroupConfig(GroupSettings, frozen=True):
    """A consumer group in the configuration: its settings, and optionally one table per reader."""

    readers: Annotated[
        list[dict[str, Any]],
        setting(
            "Several readers (each its own engine and batcher) in this group: one table of group settings "
            "per reader, over the group's own; none = one reader with the group's settings."
        ),
    ] = msgspec.field(default_factory=list)

    def reader_settings(self) -> list[GroupSettings]:
        """The settings of each reader: the group's, with each reader's table over them."""
        shared = {name: getattr(self, name) for name in GroupSettings.__struct_fields__}
        if not self.readers:
            return [GroupSettings(**shared)]
        base = msgspec.to_builtins(shared)
        return [msgspec.convert(deep_merge(base, reader), GroupSettings, strict=False) for reader in self.readers]


class HttpLimits(Settings, frozen=True):
    """What a connection may take of the server, on every listener the service opens."""

    header_timeout_s: Annotated[
        float,
        setting(
            "A request's headers must be in within this many seconds of its first byte (of the connection, "
            "for its first request); otherwise 408 and the connection is closed.",
            gt=0,
        ),
    ] = 10.0
    body_timeout_s: Annotated[
        float,
        setting("A request's body must be in within this many seconds of its headers; otherwise 408 and closed.", gt=0),
    ] = 30.0
    keep_alive_timeout_s: Annotated[
        float, setting("An idle kept-alive connection is closed after this many seconds.", gt=0)
    ] = 5.0
    max_connections: Annotated[
        int,
        setting(
            "Most connections open at once, over every listener; past it a connection gets 503 and is closed. "
            "Capped at three quarters of the open-file limit, whose soft value is raised to the hard one at start.",
            ge=1,
        ),
    ] = 4096


class ServiceSettings(Settings, frozen=True):
    """The HTTP service and the consumer groups it serves."""

    host: Annotated[str, setting("Address to listen on.")] = "0.0.0.0"
    port: Annotated[int, setting("Port to listen on.", ge=1, le=65535)] = DEFAULT_PORT
    api_key: Annotated[
        str | None,
        setting(
            "Require `Authorization: Bearer <key>` on every route but /health and /ready (and on the "
            "management API, unless management_api_key is set)."
        ),
    ] = None
    max_body_bytes: Annotated[int, setting("Largest request body accepted; more gets 413.", ge=1)] = 8 * 1024 * 1024
    shutdown_timeout_s: Annotated[
        float,
        setting(
            "On SIGTERM, how long queued work may take to drain before exit; also how long a reader "
            "removed through the management API may take to finish its work.",
            ge=0,
        ),
    ] = 30.0
    tokenizer_threads: Annotated[int, setting("Threads that tokenize (the Rust tokenizer releases the GIL).", ge=1)] = 1
    # Waking the tokenizer thread and handing the result back costs more than
    # the Rust tokenizer needs for a few short texts.
    inline_tokenize_chars: Annotated[
        int,
        setting(
            "Requests of at most 8 texts totalling at most this many characters are tokenized on the event "
            "loop rather than in the tokenizer thread; 0 sends every request to the tokenizer thread.",
            ge=0,
        ),
    ] = 256
    tokenizer_parallelism: Annotated[
        bool,
        setting(
            "Let the Rust tokenizer spread one batch over its own thread pool (TOKENIZERS_PARALLELISM). Off: "
            "waking that pool costs more latency than it saves when the engine already uses every core."
        ),
    ] = False
    access_log: Annotated[bool, setting("Log every request (off: it costs CPU under load).")] = False
    log_level: Annotated[Literal["critical", "error", "warning", "info", "debug"], setting("Log level.")] = "info"
    management_port: Annotated[
        Port | None,
        setting(
            "Port of the management API (Takeoff's: list, add and remove readers while serving), in the same "
            "process; unset = port + 1, as Takeoff has it; 0 = not served."
        ),
    ] = None
    management_host: Annotated[str | None, setting("Address the management API listens on; unset = host.")] = None
    management_api_key: Annotated[
        str | None, setting("Bearer key the management API requires; unset = api_key (none if that is unset).")
    ] = None
    max_readers: Annotated[
        int,
        setting(
            "Most readers (loaded models) at once, those from the command line or config file included; "
            "adding one past it gets 409.",
            ge=1,
        ),
    ] = 16
    readers_file: Annotated[
        str | None,
        setting(
            "JSON file that readers added or removed through the management API are saved to (atomically) "
            "and loaded from at start; unset = such changes last until the process ends."
        ),
    ] = None
    export_dir: Annotated[
        str,
        setting(
            "Where the management API exports a model given as a hub id or save_pretrained directory: one "
            "artifact directory per reader, deleted with the reader."
        ),
    ] = str(DEFAULT_EXPORT_DIR)
    export_timeout_s: Annotated[
        float, setting("Longest an export for the management API may take; past it the reader fails.", gt=0)
    ] = 3600.0
    http: HttpLimits = msgspec.field(default_factory=HttpLimits)
    groups: Annotated[
        dict[str, GroupConfig],
        setting("Consumer groups by name; `slipstream serve DIR` makes one named `primary`."),
    ] = msgspec.field(default_factory=dict)
    reader_defaults: Annotated[
        GroupSettings,
        setting(
            "Group settings readers added through the management API start from (`[reader_defaults]`); "
            "group settings given as flags or environment variables apply here too."
        ),
    ] = msgspec.field(default_factory=GroupSettings)

    @property
    def management_listen_port(self) -> int | None:
        """The management API's port, or None when it is not served."""
        if self.management_port == 0:
            return None
        if self.management_port is None:
            return self.port + 1 if self.port < 65535 else None
        return self.management_port

    @property
    def management_key(self) -> str | None:
        return self.management_api_key or self.api_key

    def readers_by_group(self) -> dict[str, list[GroupSettings]]:
        """Every reader from the command line and config file, by consumer group."""
        return {name: group.reader_settings() for name, group in self.groups.items()}
