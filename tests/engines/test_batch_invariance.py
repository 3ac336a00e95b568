"""An item's logits do not depend on what shares its run: batch-mates, its
position, the padded length, or whether the run used one thread or every core.
Bitwise, for every variant an artifact carries (fp32 runs batches as they come;
dynamic int8 runs each item alone, unpadded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipstream.engines import EngineSettings, load_engine
from slipstream.engines.onnx_engine import OnnxEngine
from slipstream.engines.per_item import real_lengths
from slipstream.manifest import load_manifest

Item = tuple[np.ndarray, np.ndarray]  # token ids, token type ids


@pytest.fixture(scope="module", params=["fp32", "int8"])
def engine(request: pytest.FixtureRequest, tiny_artifact: Path) -> OnnxEngine:
    return load_engine(tiny_artifact, device="cpu", variant=request.param, settings=EngineSettings(max_batch_size=16))


@st.composite
def items(draw: st.DrawFn) -> Item:
    # Mostly short, sometimes past cpu.wide_from_length (128), where a run alone uses every core.
    length = draw(st.one_of(st.integers(1, 40), st.integers(120, 200)))
    ids = np.array(draw(st.lists(st.integers(5, 390), min_size=length, max_size=length)), dtype=np.int64)
    second_segment = draw(st.integers(0, length))
    types = (np.arange(length) >= second_segment).astype(np.int64)
    return ids, types


def batch_of(rows: list[Item], extra_padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max(len(ids) for ids, _ in rows) + extra_padding
    ids = np.zeros((len(rows), width), np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, (item_ids, item_types) in enumerate(rows):
        ids[row, : len(item_ids)], types[row, : len(item_ids)], mask[row, : len(item_ids)] = item_ids, item_types, 1
    return ids, mask, types


@settings(max_examples=60, deadline=None)
@given(target=items(), mates=st.lists(items(), max_size=7), data=st.data())
def test_a_rows_logits_are_bitwise_the_same_alone_and_among_any_batch_mates_and_padding(
    engine: OnnxEngine, target: Item, mates: list[Item], data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(mates)), label="position")
    extra_padding = data.draw(st.integers(0, 24), label="extra padding")
    rows = [*mates[:position], target, *mates[position:]]
    ids, types = target
    alone = engine.run(ids[None], np.ones_like(ids)[None], types[None])
    together = engine.run(*batch_of(rows, extra_padding))
    np.testing.assert_array_equal(together[position], alone[0])


def test_the_int8_variant_is_recorded_as_run_per_item_and_the_engine_tells_the_batcher_one_at_a_time(
    tiny_artifact: Path,
) -> None:
    manifest = load_manifest(tiny_artifact)
    assert manifest.variants["int8"].execution == "per_item" and manifest.variants["int8"].runs_per_item
    assert manifest.variants["fp32"].execution == "batched"
    int8 = load_engine(tiny_artifact, device="cpu", variant="int8", settings=EngineSettings(max_batch_size=16))
    fp32 = load_engine(tiny_artifact, device="cpu", variant="fp32", settings=EngineSettings(max_batch_size=16))
    assert int8.max_batch_size == 1 and int8.describe().options["execution"] == "per_item"
    assert fp32.max_batch_size == 16 and "execution" not in fp32.describe().options
    # A per-item engine still takes a whole batch from direct callers, up to the configured maximum.
    assert int8.run(np.full((16, 8), 7, np.int64), np.ones((16, 8), np.int64)).shape == (16, 3)


def test_real_lengths_end_after_each_rows_last_real_token() -> None:
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert real_lengths(mask).tolist() == [2, 4, 3, 4]
