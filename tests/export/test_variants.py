"""The optimized fp32 graph and the int8 / fp16 variants."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from slipstream.manifest import load_manifest, sha256_of, verify_variant_file

ALL_CPU_RUNNABLE = ("fp32", "int8", "fp16")


@pytest.fixture(scope="module")
def bert_all_variants(tiny_artifact_factory: Callable[..., Path]) -> Path:
    return tiny_artifact_factory("bert", 3, ALL_CPU_RUNNABLE)


def _op_counts(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_every_requested_variant_is_written_with_hash_size_and_validation(bert_all_variants: Path) -> None:
    manifest = load_manifest(bert_all_variants)
    assert sorted(manifest.variants) == sorted(ALL_CPU_RUNNABLE)
    for name, variant in manifest.variants.items():
        path = verify_variant_file(bert_all_variants, variant)
        assert variant.file == f"model.{name}.onnx"
        assert variant.sha256 == sha256_of(path) and variant.size_bytes == path.stat().st_size
        assert variant.validation.passed
        assert variant.validation.n_inputs >= 20
        assert variant.validation.criteria
    assert manifest.variants["fp32"].validation.max_abs_diff <= 1e-4
    assert manifest.variants["int8"].intended_devices == ["cpu"]
    assert "cuda" in manifest.variants["fp16"].intended_devices


def test_fp32_graph_is_fused_for_onnx_runtime(bert_all_variants: Path) -> None:
    ops = _op_counts(bert_all_variants / "model.fp32.onnx")
    assert ops["Attention"] == 2  # one per layer
    assert ops["SkipLayerNormalization"] >= 4
    assert ops["BiasGelu"] + ops["FastGelu"] + ops["Gelu"] >= 2


def test_fused_graph_honours_any_attention_mask_not_just_right_padding(
    bert_all_variants: Path, tiny_model_factory: Callable[..., Path]
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    ids = np.array([[0, 0, 2, 50, 60, 70, 3], [2, 50, 60, 70, 3, 0, 0], [2, 50, 0, 60, 70, 3, 0]])
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    session = ort.InferenceSession(str(bert_all_variants / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_factory("bert")).eval()
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    np.testing.assert_allclose(session.run(None, inputs)[0], expected, atol=1e-4, rtol=0)


def test_int8_variant_is_quantized_and_smaller(bert_all_variants: Path) -> None:
    ops = _op_counts(bert_all_variants / "model.int8.onnx")
    assert ops["DynamicQuantizeLinear"] + ops["DynamicQuantizeMatMul"] + ops["QAttention"] > 0
    assert ops["MatMul"] < _op_counts(bert_all_variants / "model.fp32.onnx")["MatMul"] or ops["QAttention"]
    manifest = load_manifest(bert_all_variants)
    assert manifest.variants["int8"].size_bytes < manifest.variants["fp32"].size_bytes


def test_fp16_variant_keeps_int64_inputs_and_fp32_logits(bert_all_variants: Path) -> None:
    model = onnx.load(str(bert_all_variants / "model.fp16.onnx"))
    input_types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert set(input_types.values()) == {onnx.TensorProto.INT64}
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert weights, "the fp16 variant must store its weights in half precision"


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_reduced_precision_variants_agree_with_fp32_on_a_batch(bert_all_variants: Path, variant: str) -> None:
    manifest = load_manifest(bert_all_variants)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 300, size=(9, 40), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 2, 3
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    inputs = {name: inputs[name] for name in manifest.input_names}
    sessions = {
        name: ort.InferenceSession(str(bert_all_variants / f"model.{name}.onnx"), providers=["CPUExecutionProvider"])
        for name in ("fp32", variant)
    }
    reference = sessions["fp32"].run(None, inputs)[0]
    got = sessions[variant].run(None, inputs)[0]
    assert got.dtype == np.float32 and got.shape == reference.shape
    assert np.mean(got.argmax(1) == reference.argmax(1)) >= 0.75
    assert np.corrcoef(got.ravel(), reference.ravel())[0, 1] > 0.95


def test_int8_works_for_a_model_without_token_type_ids(tiny_artifact_factory: Callable[..., Path]) -> None:
    artifact = tiny_artifact_factory("roberta", 3, ("fp32", "int8"))
    manifest = load_manifest(artifact)
    assert sorted(manifest.variants) == ["fp32", "int8"]
    assert manifest.input_names == ["input_ids", "attention_mask"]
