"""`--readers-file`: the readers added through the management API, kept across restarts.

A JSON list, rewritten whole and atomically (a temporary file renamed over the
old one) after every change, so a crash leaves the old list or the new one,
never half of one. Secrets (`access_token`) are never written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from slipstream.json_files import pretty_json


class ReadersFileError(ValueError):
    """The readers file cannot be read; the message says why."""


class SavedReader(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reader_id: str
    # The reader config as it was posted (Takeoff's fields and group settings), without secrets.
    config: dict[str, Any]
    # The artifact this server exported for it, when it was given a hub id or model directory.
    exported_artifact: str | None = None


class ReadersFile:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()

    def load(self) -> list[SavedReader]:
        """The saved readers; none when the file does not exist yet."""
        if not self.path.exists():
            return []
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=list[SavedReader])
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ReadersFileError(f"readers file {self.path}: {exc}") from None

    def save(self, readers: list[SavedReader]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.tmp")
        with open(staging, "wb") as file:
            file.write(pretty_json(readers))
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, self.path)
