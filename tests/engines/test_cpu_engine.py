"""The CPU engine end to end on tiny exported models."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime as ort
import pytest

from slipstream.engines import CpuSettings, EngineSettings, load_engine
from slipstream.engines.base import Engine, EngineError
from slipstream.engines.onnx_engine import OnnxEngine
from slipstream.manifest import load_manifest


def _validation_set(model_dir: Path, input_names: list[str]):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from slipstream.export.validation import build_validation_set

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return build_validation_set(model, tokenizer, input_names=input_names, max_length=512)


@pytest.fixture(scope="module")
def bert_validation_set(tiny_model_factory, tiny_artifact: Path):
    return _validation_set(tiny_model_factory("bert", 3), load_manifest(tiny_artifact).input_names)


def _random_batch(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(5, 200, size=(batch, length), dtype=np.int64)
    lengths = rng.integers(1, length + 1, size=batch)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


def test_it_is_an_engine(bert_fp32_engine: OnnxEngine) -> None:
    assert isinstance(bert_fp32_engine, Engine)
    assert bert_fp32_engine.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert bert_fp32_engine.num_labels == 3


def test_fp32_matches_pytorch_on_the_export_validation_set(bert_fp32_engine: OnnxEngine, bert_validation_set) -> None:
    outputs = []
    for batch, expected in zip(bert_validation_set.batches, bert_validation_set.reference_logits, strict=True):
        logits = bert_fp32_engine.run(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        assert logits.dtype == np.float32 and logits.shape == expected.shape
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
        outputs.append(logits)
    # The tiny model must tell inputs apart, or this parity check proves nothing.
    singles = outputs[2]
    assert np.ptp(singles, axis=0).min() > 0.05


def test_int8_is_the_cpu_default_and_agrees_with_pytorch_on_top1(
    bert_int8_engine: OnnxEngine, bert_validation_set
) -> None:
    assert bert_int8_engine.describe().variant == "int8"
    expected = np.concatenate(bert_validation_set.reference_logits)
    got = np.concatenate(
        [
            bert_int8_engine.run(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            for b in bert_validation_set.batches
        ]
    )
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.85


def test_every_bucket_shape_matches_the_onnx_model_run_directly(
    tiny_artifact: Path, bert_fp32_engine: OnnxEngine
) -> None:
    reference = ort.InferenceSession(str(tiny_artifact / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for length in bert_fp32_engine.buckets:
        for batch in (1, 5):
            ids, mask = _random_batch(rng, batch, length)
            types = np.zeros_like(ids)
            got = bert_fp32_engine.run(ids, mask, types)
            (want,) = reference.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"shape {(batch, length)}")


def test_a_length_between_edges_runs_as_it_is_on_cpu_with_the_logits_of_its_bucket(
    bert_fp32_engine: OnnxEngine,
) -> None:
    rng = np.random.default_rng(1)
    ids, mask = _random_batch(rng, 4, 13)  # between the CPU edges 8 and 16
    padded_ids = np.pad(ids, ((0, 0), (0, 3)))
    padded_mask = np.pad(mask, ((0, 0), (0, 3)))
    np.testing.assert_allclose(
        bert_fp32_engine.run(ids, mask), bert_fp32_engine.run(padded_ids, padded_mask), atol=1e-5
    )


@pytest.mark.parametrize(("fixed_shapes", "fed_length"), [(True, 16), (False, 13)])
def test_only_engines_with_fixed_shapes_pad_up_to_the_bucket(fixed_shapes: bool, fed_length: int) -> None:
    from slipstream.engines.onnx_engine import EngineSpec

    class ShapeRecorder:
        warmup_runs = 1
        shapes: ClassVar[list[tuple[int, ...]]] = []

        def run(self, feeds):
            self.shapes.append(feeds["input_ids"].shape)
            return np.zeros((feeds["input_ids"].shape[0], 2), dtype=np.float32)

    spec = EngineSpec(
        variant="fp32",
        model_file="m.onnx",
        device="cuda" if fixed_shapes else "cpu",
        providers=[],
        options={},
        buckets=[8, 16, 512],
        max_batch_size=4,
        input_names=["input_ids", "attention_mask"],
        num_labels=2,
        pad_token_id=0,
        fixed_shapes=fixed_shapes,
    )
    recorder = ShapeRecorder()
    engine = OnnxEngine(spec, [recorder], [0, 0, 0])
    engine.run(np.ones((2, 13), np.int64), np.ones((2, 13), np.int64))
    assert recorder.shapes == [(2, fed_length)]


def test_token_type_ids_default_to_zeros(bert_fp32_engine: OnnxEngine) -> None:
    ids, mask = _random_batch(np.random.default_rng(2), 2, 16)
    np.testing.assert_array_equal(bert_fp32_engine.run(ids, mask), bert_fp32_engine.run(ids, mask, np.zeros_like(ids)))


def test_a_model_without_token_type_ids_ignores_them(tiny_artifact_factory) -> None:
    # Same artifact as the export tests' (default arguments), so the session builds it once.
    engine = load_engine(tiny_artifact_factory("roberta"), device="cpu")
    assert "token_type_ids" not in engine.input_names
    ids, mask = _random_batch(np.random.default_rng(3), 3, 24)
    logits = engine.run(ids, mask, np.ones_like(ids))
    assert logits.shape == (3, 3)
    np.testing.assert_array_equal(logits, engine.run(ids, mask))


@pytest.mark.parametrize(
    ("ids_shape", "mask_shape", "message"),
    [
        ((2, 8), (2, 9), "of one shape"),
        ((8,), (8,), r"\[batch, length\]"),
        ((65, 8), (65, 8), "outside 1..max_batch_size=64"),
        ((1, 513), (1, 513), "exceeds the largest bucket 512"),
    ],
)
def test_bad_shapes_are_refused(bert_fp32_engine: OnnxEngine, ids_shape, mask_shape, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        bert_fp32_engine.run(np.ones(ids_shape, np.int64), np.ones(mask_shape, np.int64))


def test_warmup_runs_every_requested_shape(tiny_artifact: Path) -> None:
    engine = load_engine(
        tiny_artifact, device="cpu", variant="fp32", settings=EngineSettings(buckets=[8, 32], max_batch_size=4)
    )
    assert engine.buckets == [8, 32, 512]
    engine.warmup([(1, 8), (4, 8), (1, 32), (4, 512)])


def test_description_names_variant_providers_options_and_buckets(tiny_artifact: Path) -> None:
    engine = load_engine(
        tiny_artifact,
        device="cpu",
        variant="fp32",
        settings=EngineSettings(max_batch_size=8, cpu=CpuSettings(intra_op_threads=1)),
    )
    description = engine.describe()
    assert description.variant == "fp32"
    assert description.model_file == "model.fp32.onnx"
    assert description.device == "cpu"
    assert description.providers == ["CPUExecutionProvider"]
    assert description.options["intra_op_threads"] == "1"
    assert description.options["graph_optimization_level"] == "all"
    assert description.options["allow_spinning"] == "false"
    assert description.buckets[:3] == [8, 16, 24] and description.buckets[-1] == 512
    assert description.max_batch_size == 8


def test_by_default_each_core_runs_its_own_single_threaded_batch(bert_fp32_engine: OnnxEngine) -> None:
    from slipstream.engines.platform import physical_cores

    options = bert_fp32_engine.describe().options
    assert options["intra_op_threads"] == "1"
    assert options["parallel_runs"] == str(physical_cores()) == str(bert_fp32_engine.parallel_runs)


def test_more_threads_per_run_means_fewer_runs_at_once(tiny_artifact: Path) -> None:
    engine = load_engine(
        tiny_artifact,
        device="cpu",
        variant="fp32",
        settings=EngineSettings(cpu=CpuSettings(intra_op_threads=2, parallel_runs=3)),
    )
    assert (engine.describe().options["intra_op_threads"], engine.parallel_runs) == ("2", 3)
    with pytest.raises(ValueError, match="parallel_runs"):
        CpuSettings(parallel_runs=-1)


def test_concurrent_runs_each_get_their_own_logits(bert_fp32_engine: OnnxEngine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    batches = [_random_batch(rng, batch, length) for batch, length in [(1, 8), (3, 24), (2, 64), (4, 16)] * 4]
    expected = [bert_fp32_engine.run(ids, mask) for ids, mask in batches]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda batch: bert_fp32_engine.run(*batch), batches))
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-5)


def test_long_batches_run_alone_on_every_core_with_the_same_logits(tiny_artifact: Path) -> None:
    from slipstream.engines.platform import physical_cores

    def engine(wide_from_length: int) -> OnnxEngine:
        return load_engine(
            tiny_artifact,
            device="cpu",
            variant="fp32",
            settings=EngineSettings(cpu=CpuSettings(wide_from_length=wide_from_length)),
        )

    with_wide, without = engine(16), engine(0)
    options = with_wide.describe().options
    # A wide session only exists when a narrow run does not already have every core.
    expected_threads = physical_cores() if physical_cores() > 1 else 0
    assert options["wide_threads"] == str(expected_threads)
    assert without.describe().options["wide_threads"] == "0"
    ids, mask = _random_batch(np.random.default_rng(3), 3, 40)
    np.testing.assert_allclose(with_wide.run(ids, mask), without.run(ids, mask), rtol=0, atol=1e-5)
