"""The JSON files Slipstream writes for people: indented by two, ending in a newline, and read back as written."""

from __future__ import annotations

import json

import msgspec

from slipstream.json_files import pretty_json, write_json


class _Record(msgspec.Struct):
    name: str
    scores: list[float]


def test_pretty_json_is_indented_by_two_and_ends_in_a_newline():
    assert pretty_json({"a": [1, 2]}) == b'{\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_write_json_writes_structs_that_read_back_equal(tmp_path):
    record = _Record(name="x", scores=[0.5, 1.0])
    path = write_json(tmp_path / "record.json", record)
    assert path == tmp_path / "record.json"
    assert msgspec.json.decode(path.read_bytes(), type=_Record) == record
    assert json.loads(path.read_text()) == {"name": "x", "scores": [0.5, 1.0]}
