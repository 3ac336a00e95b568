"""Real weights: the default reranker (all-MiniLM-L6-v2 distilled into a one-output
BertForSequenceClassification) as `make serve` exports it (slow)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification

from slipstream.default_model.build import DefaultBuild
from slipstream.export import canned_inputs
from slipstream.manifest import load_manifest, verify_variant_file

pytestmark = pytest.mark.slow


def test_the_default_reranker_exports_every_cpu_variant_validated_and_faithful(
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
