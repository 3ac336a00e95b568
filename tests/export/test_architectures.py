"""Every supported architecture exports to an fp32 graph that matches PyTorch.

Inputs are tokenized with the artifact's own tokenizer.json, as the service
will, and run through PyTorch and ONNX Runtime: batch 1 and 17, lengths 3
and 200 (pairs: 16 and 200), with padding inside the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from slipstream.export import canned_inputs
from slipstream.manifest import load_manifest
from tests.export.tiny_models import ARCHITECTURES

MODEL_TYPES = list(ARCHITECTURES)
TAKES_TOKEN_TYPE_IDS = {"bert", "electra", "albert"}
LONG_TEXT = " ".join([canned_inputs.LONG_PASSAGE] * 4)


@pytest.fixture(scope="module")
def exported(tiny_model_factory: Callable[..., Path], tiny_artifact_factory: Callable[..., Path]):
    @cache
    def load(model_type: str) -> tuple[Path, Path, torch.nn.Module, ort.InferenceSession]:
        model_dir = tiny_model_factory(model_type)
        artifact = tiny_artifact_factory(model_type)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        session = ort.InferenceSession(str(artifact / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
        return model_dir, artifact, model, session

    return load


def _texts(batch: int, pairs: bool) -> list[str] | list[tuple[str, str]]:
    singles = [LONG_TEXT, *canned_inputs.SINGLES, *canned_inputs.PASSAGES]
    if not pairs:
        return [singles[i % len(singles)] for i in range(batch)]
    queries, passages = canned_inputs.QUERIES, [LONG_TEXT, *canned_inputs.PASSAGES]
    return [(queries[i % len(queries)], passages[i % len(passages)]) for i in range(batch)]


def _encode(artifact: Path, texts: list, length: int) -> dict[str, np.ndarray]:
    manifest = load_manifest(artifact)
    tokenizer = Tokenizer.from_file(str(artifact / manifest.tokenizer.file))
    tokenizer.enable_truncation(length, strategy="longest_first")
    tokenizer.enable_padding(
        length=length, pad_id=manifest.tokenizer.pad_token_id, pad_token=manifest.tokenizer.pad_token
    )
    encodings = tokenizer.encode_batch(texts)
    arrays = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    return {name: arrays[name] for name in manifest.input_names}


def _pytorch_logits(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize(
    ("batch", "length", "pairs"),
    [(1, 3, False), (17, 3, False), (1, 200, False), (17, 200, False), (1, 16, True), (17, 200, True)],
)
def test_fp32_logits_match_pytorch_within_1e4(exported, model_type, batch, length, pairs) -> None:
    _, artifact, model, session = exported(model_type)
    inputs = _encode(artifact, _texts(batch, pairs), length)
    assert inputs["input_ids"].shape == (batch, length)
    expected = _pytorch_logits(model, inputs)
    (got,) = session.run(None, inputs)
    assert got.shape == (batch, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_different_inputs_give_clearly_different_logits(exported, model_type) -> None:
    _, artifact, _, session = exported(model_type)
    texts = list(dict.fromkeys([*canned_inputs.SINGLES, *canned_inputs.PASSAGES]))
    (logits,) = session.run(None, _encode(artifact, texts, 64))
    distances = np.abs(logits[:, None, :] - logits[None, :, :]).max(axis=-1)
    off_diagonal = distances[~np.eye(len(texts), dtype=bool)]
    assert off_diagonal.min() > 1e-3, "two different texts gave (nearly) the same logits"
    assert logits.std(axis=0).min() > 0.05, "logits barely depend on the input"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_written_tokenizer_encodes_singles_and_pairs_exactly_like_transformers(exported, model_type) -> None:
    model_dir, artifact, _, _ = exported(model_type)
    reference = AutoTokenizer.from_pretrained(model_dir)
    written = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    unseen = "Ünïcödé café — naïve résumé!  Two  spaces, CAPITALS and 3.14 numbers?"
    cases: list[tuple[str, str | None]] = [(text, None) for text in (*canned_inputs.SINGLES, unseen)]
    cases += list(zip(canned_inputs.QUERIES, canned_inputs.PASSAGES, strict=True))
    cases += [(unseen, canned_inputs.PASSAGES[0]), (canned_inputs.QUERIES[0], unseen)]
    for first, second in cases:
        expected = reference(first, second, return_token_type_ids=True)
        encoding = written.encode(first, second) if second is not None else written.encode(first)
        assert encoding.ids == expected["input_ids"], (first, second)
        assert encoding.type_ids == expected["token_type_ids"], (first, second)
    if model_type in TAKES_TOKEN_TYPE_IDS:
        pair = written.encode(canned_inputs.QUERIES[0], canned_inputs.PASSAGES[0])
        assert set(pair.type_ids) == {0, 1}, "the second text of a pair must be type 1"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_manifest_describes_the_graph_and_tokenizer(exported, model_type) -> None:
    model_dir, artifact, model, session = exported(model_type)
    manifest = load_manifest(artifact)
    reference = AutoTokenizer.from_pretrained(model_dir)
    assert manifest.model_type == model_type
    assert manifest.architecture == type(model).__name__
    assert manifest.input_names == [i.name for i in session.get_inputs()]
    assert ("token_type_ids" in manifest.input_names) == (model_type in TAKES_TOKEN_TYPE_IDS)
    assert manifest.tokenizer.uses_token_type_ids == (model_type in TAKES_TOKEN_TYPE_IDS)
    assert manifest.output_name == session.get_outputs()[0].name == "logits"
    assert manifest.max_sequence_length == 512
    assert manifest.tokenizer.pad_token_id == reference.pad_token_id
    assert manifest.tokenizer.special_tokens["cls_token"] == reference.cls_token
    assert manifest.tokenizer.special_tokens["sep_token"] == reference.sep_token
    # The service sets truncation and padding at runtime; the file carries neither.
    written = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    assert written.truncation is None and written.padding is None
