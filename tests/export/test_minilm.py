"""Real weights: all-MiniLM-L6-v2 under a classification head (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification

from slipstream.export import canned_inputs
from slipstream.manifest import load_manifest, verify_variant_file

pytestmark = pytest.mark.slow


def test_minilm_exports_every_cpu_variant_within_tolerance(minilm_artifact: Path) -> None:
    manifest = load_manifest(minilm_artifact)
    assert sorted(manifest.variants) == ["fp32", "int8"]
    assert manifest.architecture == "BertForSequenceClassification"
    assert manifest.max_sequence_length == 512
    assert manifest.variants["fp32"].validation.max_abs_diff <= 1e-4
    for variant in manifest.variants.values():
        verify_variant_file(minilm_artifact, variant)
        assert variant.validation.passed


def test_minilm_variants_rank_real_pairs_like_pytorch(minilm_artifact: Path, minilm_model_dir: Path) -> None:
    manifest = load_manifest(minilm_artifact)
    tokenizer = Tokenizer.from_file(str(minilm_artifact / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=manifest.tokenizer.pad_token_id, pad_token=manifest.tokenizer.pad_token)
    pairs = [(q, p) for q in canned_inputs.QUERIES for p in canned_inputs.PASSAGES]
    encodings = tokenizer.encode_batch(pairs)
    inputs = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    model = AutoModelForSequenceClassification.from_pretrained(minilm_model_dir).eval()
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    for name in manifest.variants:
        session = ort.InferenceSession(str(minilm_artifact / f"model.{name}.onnx"), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, inputs)
        if name == "fp32":
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        # The score each pair gets for label 1 orders the 36 pairs as PyTorch does.
        ranks = np.argsort(np.argsort(got[:, 1])), np.argsort(np.argsort(expected[:, 1]))
        assert np.corrcoef(*ranks)[0, 1] > 0.9, name
