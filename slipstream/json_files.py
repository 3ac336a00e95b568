"""JSON files written for people to read and diff: manifests, build records, benchmark reports.

One format everywhere: indented by two spaces, ending in a newline.
"""

from __future__ import annotations

from pathlib import Path

import msgspec


def pretty_json(value: object) -> bytes:
    """`value` (anything msgspec encodes: structs, dicts, lists, ...) as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n"


def write_json(path: Path | str, value: object) -> Path:
    """Write `value` to `path` as pretty JSON; returns the path."""
    path = Path(path)
    path.write_bytes(pretty_json(value))
    return path
