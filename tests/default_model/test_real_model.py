"""The default reranker exactly as `make serve` builds and serves it (slow).

One file, so that its tests share one build and one server (and, under
`make test`'s two workers, run on one of them while the other runs the rest):
its agreement with its teacher, its export, and long documents scored by
windows. The first test to run builds it into this checkout's `models/` and
`artifacts/` unless they already hold it (tests/conftest.py), which takes
minutes on two cores.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification

from benchmarks.long_ranking import Case, long_passage_cases, rank_of_first
from slipstream.default_model.build import DEFAULT_CHUNK_WINDOW, DEFAULT_RECIPE, DefaultBuild, recipe_key
from slipstream.export import canned_inputs
from slipstream.manifest import load_manifest, verify_variant_file
from tests.batching.reference_windows import plain_tokenizer
from tests.server.conftest import ServerProcess, free_port, run_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the first test may build the model (minutes)


def test_it_ranks_the_puppy_first_and_agrees_with_its_teacher(default_reranker_build: DefaultBuild) -> None:
    """The full recipe on all-MiniLM-L6-v2 (docs/default-model.md's table)."""
    record = default_reranker_build.record
    assert record.recipe_key == recipe_key(DEFAULT_RECIPE)
    report = record.report
    assert report.classic_example.passed, report.classic_example
    # Held-out agreement with the teacher was 0.796 / 0.809 / 0.913 (per query / pooled / top-1) on the
    # 2026-12-03 build; another seed (other held-out queries) scored 0.759 / 0.785 / -.
    assert report.spearman_per_query_mean > 0.75, report
    assert report.spearman_pooled > 0.75, report
    assert report.top1_agreement > 0.85, report


def test_it_exports_every_cpu_variant_validated_and_faithful(
    default_reranker_build: DefaultBuild,
) -> None:
    artifact = default_reranker_build.artifact_dir
    assert artifact is not None
    manifest = load_manifest(artifact)
    assert sorted(manifest.variants) == ["fp32", "int8"]
    assert manifest.architecture == "BertForSequenceClassification"
    assert manifest.max_sequence_length == 512
    assert manifest.labels == ["relevance"]
    assert manifest.variants["fp32"].validation.max_abs_diff <= 1e-4
    for variant in manifest.variants.values():
        verify_variant_file(artifact, variant)
        assert variant.validation.passed
    # A trained head: int8 meets the fidelity bars, so it is what a CPU serves by default.
    int8 = manifest.variants["int8"]
    assert int8.fidelity is not None and int8.fidelity.meets_bars, int8.fidelity


def test_each_variant_ranks_real_pairs_like_pytorch(default_reranker_build: DefaultBuild) -> None:
    artifact = default_reranker_build.artifact_dir
    assert artifact is not None
    manifest = load_manifest(artifact)
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=manifest.tokenizer.pad_token_id, pad_token=manifest.tokenizer.pad_token)
    pairs = [(q, p) for q in canned_inputs.QUERIES for p in canned_inputs.PASSAGES]
    encodings = tokenizer.encode_batch(pairs)
    inputs = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    model = AutoModelForSequenceClassification.from_pretrained(default_reranker_build.model_dir).eval()
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    for name in manifest.variants:
        session = ort.InferenceSession(str(artifact / f"model.{name}.onnx"), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, inputs)
        if name == "fp32":
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        # The relevance score orders the 36 pairs as PyTorch does.
        ranks = np.argsort(np.argsort(got[:, 0])), np.argsort(np.argsort(expected[:, 0]))
        assert np.corrcoef(*ranks)[0, 1] > 0.9, name


# --- long documents: the cases of `python -m benchmarks.long_ranking` ---------------------


MODEL_WINDOW = 512  # the default reranker's


@pytest.fixture(scope="module")
def default_reranker(default_reranker_artifact: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """Served as `make serve` serves it: the variant the engine picks (int8 on a CPU), the artifact's window."""
    port = free_port()
    command = [sys.executable, "-m", "slipstream.cli", "serve", str(default_reranker_artifact)]
    command += ["--port", str(port), "--host", "127.0.0.1", "--log-level", "warning"]
    with run_server(command, port, tmp_path_factory.mktemp("logs") / "default-reranker.log") as process:
        yield process


CASES = 12


@pytest.fixture(scope="module")
def tokenizer(default_reranker_artifact: Path) -> Tokenizer:
    return plain_tokenizer(default_reranker_artifact / "tokenizer.json")


@pytest.fixture(scope="module")
def cases(tokenizer: Tokenizer) -> list[Case]:
    return long_passage_cases(CASES, tokenizer, MODEL_WINDOW)


def test_served_it_chunks_by_the_short_window_its_artifact_records(default_reranker):
    batching = httpx.get(f"{default_reranker.url}/info", timeout=10).json()["groups"]["primary"]["batching"]
    # Distilled on short passages, it ranks long documents well only by short windows (docs/default-model.md).
    assert (batching["chunk_window"], batching["chunk_aggregate"]) == (DEFAULT_CHUNK_WINDOW, "max")


def test_a_relevant_paragraph_near_the_end_ranks_its_long_passage_first_only_chunked(
    default_reranker, tokenizer, cases
):
    for query, relevant, long, _ in cases:  # truncation cannot see the relevant paragraph
        assert len(tokenizer.encode(query, long[: long.index(relevant)]).ids) > MODEL_WINDOW
    truncated = [rank_of_first(default_reranker.url, q, [long, *others], "truncate") for q, _, long, others in cases]
    chunked = [rank_of_first(default_reranker.url, q, [long, *others], "chunk") for q, _, long, others in cases]
    assert all(c <= t for c, t in zip(chunked, truncated, strict=True)), (chunked, truncated)
    # Truncated, the passage is first only by chance (one of six passages: 2 cases of 12 expected).
    assert chunked.count(0) >= CASES - 2 and truncated.count(0) <= CASES // 3, (chunked, truncated)


def test_a_short_relevant_passage_still_beats_long_irrelevant_ones_chunked(default_reranker, cases):
    for query, relevant, _, irrelevant in cases:
        assert rank_of_first(default_reranker.url, query, [relevant, *irrelevant], "chunk") == 0
