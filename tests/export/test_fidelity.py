"""Fidelity to fp32 on real text and batch invariance: measured at export, gated, recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from slipstream.engines.selection import choose_variant
from slipstream.export import api, fidelity
from slipstream.export.errors import ExportError
from slipstream.export.fidelity import FidelitySet, FidelitySettings, measure_fidelity, rerank_queries
from slipstream.export.graph_optimization import Int8Options, quantize_int8
from slipstream.export.smoothing import smooth_file
from slipstream.manifest import load_manifest
from tests.conftest import TINY_FIDELITY


def test_the_default_set_is_100_queries_of_20_distinct_real_passages_the_same_every_time() -> None:
    queries = rerank_queries(FidelitySettings())
    assert len(queries) == 100
    assert queries == rerank_queries(FidelitySettings())
    for query in queries:
        assert len(query.passages) == 20 == len(set(query.passages))
        assert len(query.query.split()) >= 1 and all(len(p.split()) >= 10 for p in query.passages)
    # Calibration text for quantization is drawn apart from it.
    calibration = {q.query for q in rerank_queries(FidelitySettings(), seed_offset=1)}
    assert len(calibration & {q.query for q in queries}) < 10


def _set(task: str, n_queries: int = 4, per_query: int = 5) -> FidelitySet:
    return FidelitySet(task=task, items=[], n_queries=n_queries, passages_per_query=per_query)  # type: ignore[arg-type]


def test_rerank_fidelity_is_the_same_best_passage_and_the_per_query_ranking() -> None:
    reference = np.arange(20, dtype=np.float32).reshape(20, 1)
    same = measure_fidelity(_set("rerank"), reference, reference + 0.5)
    assert same.top1_agreement == 1.0 and same.spearman_per_query == pytest.approx(1.0) and same.meets_bars
    swapped = reference.copy()
    swapped[[3, 4]] = swapped[[4, 3]]  # query 0: its best two passages change places
    worse = measure_fidelity(_set("rerank"), reference, swapped)
    assert worse.top1_agreement == 0.75 and worse.spearman_per_query == pytest.approx((3 + 0.9) / 4)
    assert not worse.meets_bars and worse.n_queries == 4 and worse.n_inputs == 20


def test_classification_fidelity_is_arg_max_label_agreement() -> None:
    reference = np.eye(3, dtype=np.float32)[np.arange(200) % 3]
    candidate = reference.copy()
    candidate[0] = [0.0, 2.0, 0.0]
    assert measure_fidelity(_set("classification", 20, 10), reference, candidate).top1_agreement == 0.995
    candidate[1] = [2.0, 0.0, 0.0]
    assert measure_fidelity(_set("classification", 20, 10), reference, candidate).meets_bars  # 0.99 is enough
    candidate[2] = [2.0, 0.0, 0.0]
    assert not measure_fidelity(_set("classification", 20, 10), reference, candidate).meets_bars


def test_non_finite_logits_never_meet_the_bars() -> None:
    reference = np.arange(20, dtype=np.float32).reshape(20, 1)
    broken = reference.copy()
    broken[7] = np.nan
    assert not measure_fidelity(_set("rerank"), reference, broken).meets_bars


def test_every_variant_records_its_fidelity_and_batch_invariance_on_the_full_set(
    tiny_model_factory: Callable[..., Path], tmp_path: Path
) -> None:
    # The one tiny export with the bars' full set; its int8 misses them (a random
    # one-logit head has near-ties), so it is kept as opt-in.
    outcome = api.export_artifact(
        str(tiny_model_factory("bert", 1)), tmp_path / "a", variants=["fp32", "int8"], keep_unfaithful=True
    )
    fp32, int8 = outcome.manifest.variants["fp32"], outcome.manifest.variants["int8"]
    assert fp32.fidelity is None and fp32.execution == "batched"
    cpu = fp32.invariance_on("cpu")
    assert cpu is not None and cpu.guarantee == "bitwise" and cpu.measured_max_abs_diff == 0.0
    gpu = fp32.invariance_on("cuda")
    assert gpu is not None and gpu.guarantee == "tolerance" and gpu.measured_max_abs_diff is None
    assert "not measured on a GPU" in gpu.basis
    assert int8.execution == "per_item" and int8.fidelity is not None
    assert (int8.fidelity.task, int8.fidelity.n_queries, int8.fidelity.n_inputs) == ("rerank", 100, 2000)
    int8_cpu = int8.invariance_on("cpu")
    assert int8_cpu is not None and int8_cpu.guarantee == "bitwise" and int8_cpu.measured_max_abs_diff == 0.0
    assert int8.quantization is not None and int8.quantization.smoothing_alpha == 0.9
    if not int8.fidelity.meets_bars:
        assert choose_variant(outcome.manifest, "cpu", None) == "fp32"  # opt-in: served only by name
        assert choose_variant(outcome.manifest, "cpu", "int8") == "int8"


def test_a_variant_that_misses_the_fidelity_bars_is_not_written_unless_kept(
    tiny_model_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fidelity, "CLASSIFICATION_MIN_TOP1", 1.01)
    model = str(tiny_model_factory("bert"))
    outcome = api.export_artifact(model, tmp_path / "a", variants=["fp32", "int8"], fidelity=TINY_FIDELITY)
    assert sorted(outcome.manifest.variants) == ["fp32"]
    assert "not faithful to fp32 on real text" in outcome.rejected["int8"]
    assert "--keep-unfaithful" in outcome.rejected["int8"]
    kept = api.export_artifact(
        model, tmp_path / "b", variants=["fp32", "int8"], fidelity=TINY_FIDELITY, keep_unfaithful=True
    )
    int8 = kept.manifest.variants["int8"]
    assert not kept.rejected and int8.fidelity is not None and not int8.fidelity.meets_bars


def test_the_invariance_check_catches_int8_run_as_a_batch(
    tiny_model_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dynamic int8 with one activation scale per run, run as batches: what the service did before.
    monkeypatch.setitem(api.EXECUTION, "int8", "batched")
    outcome = api.export_artifact(
        str(tiny_model_factory("bert")), tmp_path / "a", variants=["fp32", "int8"], fidelity=TINY_FIDELITY
    )
    assert "int8" not in outcome.manifest.variants
    assert "between alone and co-batched" in outcome.rejected["int8"]


def test_an_fp32_export_that_is_not_batch_invariant_writes_nothing(
    tiny_model_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fidelity, "co_batched_max_diff", lambda *args, **kwargs: (1e-3, 8))
    with pytest.raises(ExportError, match="the fp32 export is not batch-invariant"):
        api.export_artifact(str(tiny_model_factory("bert")), tmp_path / "a", variants=["fp32"], fidelity=TINY_FIDELITY)
    assert not (tmp_path / "a").exists()


def _feeds(rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
    ids = rng.integers(5, 300, size=(1, length), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def test_smoothing_leaves_the_fp32_logits_unchanged(tiny_artifact: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    calibration = [_feeds(rng, n) for n in (5, 17, 40)]
    smoothed = tmp_path / "smoothed.onnx"
    count = smooth_file(
        tiny_artifact / "model.fp32.onnx",
        smoothed,
        op_types=("MatMul", "Attention"),
        skip=(),
        alpha=0.9,
        calibration=lambda: calibration,
    )
    assert count == 2 * 4  # per layer: the fused attention's QKV, its output, the feed-forward's two
    assert sum(node.op_type == "Mul" for node in onnx.load(str(smoothed)).graph.node) >= count
    original = ort.InferenceSession(str(tiny_artifact / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    rewritten = ort.InferenceSession(str(smoothed), providers=["CPUExecutionProvider"])
    for feeds in [_feeds(rng, 23), _feeds(rng, 64)]:
        np.testing.assert_allclose(rewritten.run(None, feeds)[0], original.run(None, feeds)[0], atol=1e-5)


@pytest.mark.parametrize(
    ("flags", "reduce_range", "needs"),
    [
        (frozenset({"avx2", "avx512bw", "avx512_vnni"}), False, ["avx512_vnni", "avx_vnni", "amx_int8"]),
        (frozenset({"avx2"}), True, []),
    ],
)
def test_the_int8_weight_range_is_chosen_from_the_exporting_cpus_flags_and_recorded(
    tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags, reduce_range: bool, needs
) -> None:
    monkeypatch.setattr("slipstream.export.graph_optimization.cpu_flags", lambda: flags)
    quantization = quantize_int8(tiny_artifact / "model.fp32.onnx", tmp_path / "int8.onnx", Int8Options())
    assert quantization.reduce_range is reduce_range and quantization.needs_any_cpu_flag == needs
    assert quantization.smoothing_alpha is None  # no calibration text given: no smoothing
    forced = quantize_int8(tiny_artifact / "model.fp32.onnx", tmp_path / "int8b.onnx", Int8Options(reduce_range=True))
    assert forced.reduce_range and forced.needs_any_cpu_flag == []


def test_a_full_range_int8_variant_is_skipped_on_a_cpu_without_vnni(tiny_artifact: Path) -> None:
    from slipstream.engines.base import EngineError

    manifest = load_manifest(tiny_artifact)
    int8 = manifest.variants["int8"]
    assert int8.quantization is not None and int8.fidelity is not None and int8.fidelity.meets_bars
    full_range = msgspec.structs.replace(
        int8, quantization=msgspec.structs.replace(int8.quantization, needs_any_cpu_flag=["avx512_vnni"])
    )
    manifest = msgspec.structs.replace(manifest, variants={**manifest.variants, "int8": full_range})
    assert choose_variant(manifest, "cpu", None, frozenset({"avx2", "avx512_vnni"})) == "int8"
    assert choose_variant(manifest, "cpu", None, frozenset({"avx2"})) == "fp32"
    with pytest.raises(EngineError, match=r"cannot run on this CPU: .*avx512_vnni"):
        choose_variant(manifest, "cpu", "int8", frozenset({"avx2"}))
