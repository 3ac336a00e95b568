"""TensorRT and CUDA provider options, shape profiles and cache keys (no GPU needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import pytest

from slipstream.engines import cuda, tensorrt
from slipstream.engines.buckets import default_buckets
from slipstream.engines.settings import CudaSettings, EngineSettings, TensorRtSettings

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.mark.parametrize("layout", ["per_bucket", "single"])
def test_profiles_cover_every_shape_the_batcher_can_send(layout: str) -> None:
    buckets = default_buckets("tensorrt", 512)
    profiles = tensorrt.build_profiles(buckets, 32, layout)
    for length in buckets:
        for batch in range(1, 33):
            assert tensorrt.profile_for(profiles, batch, length) >= 0, (batch, length)
    assert tensorrt.profile_for(profiles, 33, 16) == -1


def test_per_bucket_profiles_are_one_session_each_tuned_for_a_full_batch() -> None:
    profiles = tensorrt.build_profiles([16, 64], 8, "per_bucket")
    assert [(p.min_shape, p.opt_shape, p.max_shape) for p in profiles] == [
        ((1, 16), (8, 16), (8, 16)),
        ((1, 64), (8, 64), (8, 64)),
    ]


def test_single_profile_spans_all_buckets_and_tunes_for_the_median() -> None:
    (profile,) = tensorrt.build_profiles([16, 32, 64, 128, 256], 8, "single")
    assert (profile.min_shape, profile.opt_shape, profile.max_shape) == ((1, 16), (8, 64), (8, 256))


def test_profile_option_strings_name_every_input() -> None:
    profile = tensorrt.ShapeProfile((64,), (1, 64), (8, 64), (8, 64))
    assert profile.option_strings(INPUTS) == {
        "trt_profile_min_shapes": "input_ids:1x64,attention_mask:1x64,token_type_ids:1x64",
        "trt_profile_opt_shapes": "input_ids:8x64,attention_mask:8x64,token_type_ids:8x64",
        "trt_profile_max_shapes": "input_ids:8x64,attention_mask:8x64,token_type_ids:8x64",
    }


def _key(**changes: Any) -> tensorrt.CacheKey:
    key = tensorrt.CacheKey(
        model_sha256="ab" * 32,
        ort_version="1.32.0",
        tensorrt_version="10.9.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        profile=tensorrt.ShapeProfile((64,), (1, 64), (8, 64), (8, 64)),
        fp16=True,
        layer_norm_fp32_fallback=True,
        builder_optimization_level=3,
    )
    return dataclasses.replace(key, **changes)


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "cd" * 32},
        {"ort_version": "1.33.0"},
        {"tensorrt_version": "10.10.0"},
        {"gpu_name": "NVIDIA H200"},
        {"profile": tensorrt.ShapeProfile((128,), (1, 128), (8, 128), (8, 128))},
        {"profile": tensorrt.ShapeProfile((64,), (1, 64), (4, 64), (8, 64))},
        {"fp16": False},
        {"builder_optimization_level": 5},
    ],
)
def test_anything_that_invalidates_an_engine_changes_its_cache_directory(change: dict, tmp_path: Path) -> None:
    assert _key(**change).engine_dir(tmp_path) != _key().engine_dir(tmp_path)
    assert _key().engine_dir(tmp_path) == _key().engine_dir(tmp_path)


def test_timing_cache_is_shared_across_models_but_not_gpus_or_versions(tmp_path: Path) -> None:
    assert _key(model_sha256="cd" * 32).timing_dir(tmp_path) == _key().timing_dir(tmp_path)
    assert _key(gpu_name="NVIDIA H200").timing_dir(tmp_path) != _key().timing_dir(tmp_path)
    assert _key(tensorrt_version="10.10.0").timing_dir(tmp_path) != _key().timing_dir(tmp_path)


def test_tensorrt_provider_options_enable_fp16_and_both_caches(tmp_path: Path) -> None:
    settings = TensorRtSettings(cache_dir=str(tmp_path), max_workspace_bytes=1 << 30)
    options = tensorrt.provider_options(settings, _key(), INPUTS, device_id=1)
    assert options["device_id"] == "1"
    assert options["trt_fp16_enable"] == "True"
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_timing_cache_enable"] == "True"
    assert Path(options["trt_engine_cache_path"]) == _key().engine_dir(tmp_path)
    assert Path(options["trt_engine_cache_path"]).is_dir()
    assert Path(options["trt_timing_cache_path"]).is_dir()
    assert options["trt_max_workspace_size"] == str(1 << 30)
    assert options["trt_profile_opt_shapes"].startswith("input_ids:8x64,")


def test_cuda_options_are_the_documented_choices() -> None:
    options = cuda.provider_options(CudaSettings(), "fp16")
    assert options == {
        "device_id": "0",
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1",
        "arena_extend_strategy": "kSameAsRequested",
        "use_tf32": "1",
        "enable_cuda_graph": "0",
    }


def test_fp32_on_cuda_keeps_full_precision_matmuls_unless_asked() -> None:
    assert cuda.provider_options(CudaSettings(), "fp32")["use_tf32"] == "0"
    assert cuda.provider_options(CudaSettings(use_tf32=True), "fp32")["use_tf32"] == "1"


def test_cuda_graphs_and_memory_limit_are_passed_through() -> None:
    options = cuda.provider_options(CudaSettings(cuda_graphs=True, gpu_mem_limit=2 << 30), "fp16")
    assert options["enable_cuda_graph"] == "1"
    assert options["gpu_mem_limit"] == str(2 << 30)


def test_settings_decode_from_plain_config_and_reject_typos() -> None:
    settings = msgspec.convert(
        {"buckets": [16, 32], "max_batch_size": 8, "cpu": {"intra_op_threads": 1}, "tensorrt": {"fp16": False}},
        EngineSettings,
    )
    assert settings.cpu.intra_op_threads == 1 and not settings.tensorrt.fp16
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"cpu": {"threads": 1}}, EngineSettings)
    with pytest.raises(msgspec.ValidationError, match="ascending"):
        msgspec.convert({"buckets": [32, 16]}, EngineSettings)
    with pytest.raises(ValueError, match="max_batch_size"):
        EngineSettings(max_batch_size=0)


def test_device_bound_runner_reuses_one_binding_per_shape_and_returns_only_logits(tiny_artifact: Path) -> None:
    # The CUDA runner's binding logic, run on host memory with the CPU provider.
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_artifact / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    runner = cuda.DeviceBoundRunner(session, INPUTS, "logits", 3, 0, cuda_graphs=False, device_type="cpu")
    rng = np.random.default_rng(0)
    for batch, length in [(2, 16), (5, 32), (2, 16), (2, 16), (1, 8)]:
        ids = rng.integers(5, 200, size=(batch, length), dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        got = runner.run(feeds)
        (want,) = session.run(["logits"], feeds)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert got.shape == (batch, 3)
    assert runner.bound_shapes == [(1, 8), (2, 16), (5, 32)]
    assert runner.warmup_runs == 1
