"""Device and variant choice, on simulated machines."""

from __future__ import annotations

import pytest

from slipstream.engines.base import EngineError
from slipstream.engines.platform import decode_tensorrt_version
from slipstream.engines.selection import choose_variant, resolve_device
from slipstream.manifest import Manifest, ManifestError
from tests.engines import fakes


def test_auto_prefers_tensorrt_when_everything_is_there() -> None:
    decision = resolve_device("auto", fakes.FULL_GPU)
    assert decision.device == "tensorrt"
    assert "H100" in decision.reason


def test_auto_takes_cuda_without_tensorrt_and_says_why() -> None:
    decision = resolve_device("auto", fakes.GPU_WITHOUT_TENSORRT)
    assert decision.device == "cuda"
    assert "not tensorrt: TensorRT 10 is not installed" in decision.reason


def test_auto_takes_cpu_on_a_gpu_build_without_gpu() -> None:
    decision = resolve_device("auto", fakes.GPU_BUILD_WITHOUT_GPU)
    assert decision.device == "cpu"
    assert "no usable NVIDIA GPU" in decision.reason


def test_auto_takes_cpu_on_the_cpu_build() -> None:
    decision = resolve_device("auto", fakes.CPU_ONLY)
    assert decision.device == "cpu"
    assert "no CUDA provider" in decision.reason and "onnxruntime-gpu" in decision.reason


@pytest.mark.parametrize(
    ("device", "platform", "missing"),
    [
        ("cuda", fakes.CPU_ONLY, "has no CUDA provider"),
        ("cuda", fakes.GPU_BUILD_WITHOUT_GPU, "no usable NVIDIA GPU"),
        ("tensorrt", fakes.CPU_ONLY, "has no TensorRT provider"),
        ("tensorrt", fakes.GPU_BUILD_WITHOUT_GPU, "no usable NVIDIA GPU"),
        ("tensorrt", fakes.GPU_WITHOUT_TENSORRT, "libnvinfer.so.10"),
    ],
)
def test_explicit_devices_are_strict_and_name_what_is_missing(device: str, platform, missing: str) -> None:
    with pytest.raises(EngineError, match=f"device '{device}' was requested but cannot be used") as raised:
        resolve_device(device, platform)
    assert missing in str(raised.value)


def test_explicit_cpu_is_always_available() -> None:
    assert resolve_device("cpu", fakes.FULL_GPU).device == "cpu"


def test_unknown_device_is_refused() -> None:
    with pytest.raises(EngineError, match="unknown device 'tpu'"):
        resolve_device("tpu", fakes.FULL_GPU)


def _manifest(tiny_artifact, **validation_overrides: bool) -> Manifest:
    import msgspec

    from slipstream.manifest import load_manifest

    manifest = load_manifest(tiny_artifact)
    variants = {
        name: msgspec.structs.replace(
            variant,
            validation=msgspec.structs.replace(
                variant.validation, passed=validation_overrides.get(name, variant.validation.passed)
            ),
        )
        for name, variant in manifest.variants.items()
    }
    return msgspec.structs.replace(manifest, variants=variants)


def test_variant_follows_the_device(tiny_artifact) -> None:
    manifest = _manifest(tiny_artifact)  # fp32 + int8
    assert choose_variant(manifest, "cpu", None) == "int8"
    assert choose_variant(manifest, "cuda", None) == "fp32"  # no fp16 in this artifact
    assert choose_variant(manifest, "tensorrt", None) == "fp32"


def test_a_variant_that_failed_validation_is_not_chosen(tiny_artifact) -> None:
    manifest = _manifest(tiny_artifact, int8=False)
    assert choose_variant(manifest, "cpu", None) == "fp32"
    with pytest.raises(EngineError, match="variant 'int8' failed validation"):
        choose_variant(manifest, "cpu", "int8")


def test_an_explicit_variant_overrides_the_device_preference(tiny_artifact) -> None:
    manifest = _manifest(tiny_artifact)
    assert choose_variant(manifest, "cpu", "fp32") == "fp32"
    with pytest.raises(ManifestError, match=r"variant 'fp16' is not in this artifact; it has \['fp32', 'int8'\]"):
        choose_variant(manifest, "cpu", "fp16")


def test_tensorrt_versions_decode_both_encodings() -> None:
    assert decode_tensorrt_version(100900) == "10.9.0"
    assert decode_tensorrt_version(8601) == "8.6.1"
