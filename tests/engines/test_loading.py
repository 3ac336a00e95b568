"""Loading: device choice on simulated machines, fallbacks, corrupt artifacts refused."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest

from slipstream.engines import EngineSettings, TensorRtSettings, load_engine
from slipstream.engines.base import EngineError
from slipstream.manifest import MANIFEST_FILE, load_manifest, write_manifest
from tests.engines import fakes

# This onnxruntime is the CPU build: asking it for a GPU provider warns, which is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:Specified provider")


@pytest.fixture
def artifact_copy(tiny_artifact: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, copy)
    return copy


def test_auto_on_this_machine_is_cpu_and_logs_why(tiny_artifact: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="slipstream.engines")
    engine = load_engine(tiny_artifact, device="auto", platform=fakes.CPU_ONLY)
    assert engine.describe().device == "cpu"
    assert engine.describe().variant == "int8"
    chosen = [r.message for r in caplog.records if r.message.startswith("engine device: auto chose cpu")]
    assert len(chosen) == 1 and "no CUDA provider" in chosen[0]


def test_auto_with_the_real_probe_loads_and_runs(tiny_artifact: Path) -> None:
    engine = load_engine(tiny_artifact)  # the service's call: device=auto, real platform probe
    logits = engine.run(np.full((2, 8), 7, np.int64), np.ones((2, 8), np.int64))
    assert logits.shape == (2, 3) and np.isfinite(logits).all()


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_an_explicit_gpu_device_fails_here_saying_what_is_missing(tiny_artifact: Path, device: str) -> None:
    with pytest.raises(EngineError, match=f"device '{device}' was requested but cannot be used: .*onnxruntime-gpu"):
        load_engine(tiny_artifact, device=device)


def test_a_provider_that_does_not_load_is_an_error_for_an_explicit_device(tiny_artifact: Path) -> None:
    # The platform claims a working GPU, but this onnxruntime (CPU build) falls
    # back to the CPU provider when asked for CUDA: strict loading must notice.
    with pytest.raises(EngineError, match="CUDAExecutionProvider did not load"):
        load_engine(tiny_artifact, device="cuda", platform=fakes.GPU_WITHOUT_TENSORRT)


def test_auto_falls_back_tensorrt_then_cuda_then_cpu_and_logs_each_step(
    tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="slipstream.engines")
    settings = EngineSettings(tensorrt=TensorRtSettings(cache_dir=str(tmp_path / "trt")))
    engine = load_engine(tiny_artifact, device="auto", settings=settings, platform=fakes.FULL_GPU)
    assert engine.describe().device == "cpu"
    messages = [r.message for r in caplog.records]
    assert any(m.startswith("engine device: auto chose tensorrt on NVIDIA H100") for m in messages)
    assert any(
        "tensorrt failed (TensorrtExecutionProvider did not load" in m and m.endswith("falls back to cuda")
        for m in messages
    )
    assert any(
        "cuda failed (CUDAExecutionProvider did not load" in m and m.endswith("falls back to cpu") for m in messages
    )


def test_explicit_tensorrt_does_not_fall_back(tiny_artifact: Path, tmp_path: Path) -> None:
    settings = EngineSettings(tensorrt=TensorRtSettings(cache_dir=str(tmp_path / "trt")))
    with pytest.raises(EngineError, match="TensorrtExecutionProvider did not load"):
        load_engine(tiny_artifact, device="tensorrt", settings=settings, platform=fakes.FULL_GPU)


def test_a_corrupt_model_file_is_refused(artifact_copy: Path) -> None:
    model = artifact_copy / "model.fp32.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    model.write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"model.fp32.onnx does not match the manifest's sha256/size"):
        load_engine(artifact_copy, device="cpu", variant="fp32")


def test_a_manifest_whose_sha256_does_not_match_is_refused(artifact_copy: Path) -> None:
    manifest = load_manifest(artifact_copy)
    int8 = manifest.variants["int8"]
    tampered = msgspec.structs.replace(
        manifest, variants={**manifest.variants, "int8": msgspec.structs.replace(int8, sha256="0" * 64)}
    )
    write_manifest(artifact_copy, tampered)
    with pytest.raises(EngineError, match=r"variant int8: .* does not match the manifest's sha256/size"):
        load_engine(artifact_copy, device="cpu")


def test_a_missing_model_file_is_refused(artifact_copy: Path) -> None:
    (artifact_copy / "model.int8.onnx").unlink()
    with pytest.raises(EngineError, match=r"model.int8.onnx is missing"):
        load_engine(artifact_copy, device="cpu")


def test_a_directory_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=f"is not a Slipstream artifact: no {MANIFEST_FILE}"):
        load_engine(tmp_path, device="cpu")


def test_an_unknown_variant_is_refused_listing_those_present(tiny_artifact: Path) -> None:
    with pytest.raises(ValueError, match=r"variant 'fp16' is not in this artifact; it has \['fp32', 'int8'\]"):
        load_engine(tiny_artifact, device="cpu", variant="fp16")
