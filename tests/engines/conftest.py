"""Engines on the tiny exported models of tests/conftest.py, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipstream.engines import EngineSettings, load_engine
from slipstream.engines.onnx_engine import OnnxEngine


@pytest.fixture(scope="session")
def bert_fp32_engine(tiny_artifact: Path) -> OnnxEngine:
    return load_engine(tiny_artifact, device="cpu", variant="fp32", settings=EngineSettings(max_batch_size=64))


@pytest.fixture(scope="session")
def bert_int8_engine(tiny_artifact: Path) -> OnnxEngine:
    return load_engine(tiny_artifact, device="cpu", settings=EngineSettings(max_batch_size=64))
