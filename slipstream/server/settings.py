"""The HTTP service's settings, and the consumer groups it serves."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from slipstream.batching.settings import GroupSettings
from slipstream.defaults import DEFAULT_PORT
from slipstream.settings import Settings, setting


class ServiceSettings(Settings, frozen=True):
    """The HTTP service and the consumer groups it serves."""

    host: Annotated[str, setting("Address to listen on.")] = "0.0.0.0"
    port: Annotated[int, setting("Port to listen on.", ge=1, le=65535)] = DEFAULT_PORT
    api_key: Annotated[
        str | None, setting("Require `Authorization: Bearer <key>` on every route but /health and /ready.")
    ] = None
    max_body_bytes: Annotated[int, setting("Largest request body accepted; more gets 413.", ge=1)] = 8 * 1024 * 1024
    shutdown_timeout_s: Annotated[
        float, setting("On SIGTERM, how long queued work may take to drain before exit.", ge=0)
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
    groups: Annotated[
        dict[str, GroupSettings],
        setting("Consumer groups by name; `slipstream serve DIR` makes one named `primary`."),
    ] = msgspec.field(default_factory=dict)
