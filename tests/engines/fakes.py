"""Hand-made platforms: what a machine would offer, without that machine."""

from __future__ import annotations

from slipstream.engines.platform import CPU_PROVIDER, CUDA_PROVIDER, TENSORRT_PROVIDER, Platform

GPU_PROVIDERS = (TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER)


def platform(
    providers: tuple[str, ...] = GPU_PROVIDERS,
    gpu_name: str | None = "NVIDIA H100 80GB HBM3",
    tensorrt_version: str | None = "10.9.0",
) -> Platform:
    return Platform(
        ort_version="1.32.0",
        available_providers=providers,
        gpu_name=gpu_name,
        gpu_problem=None if gpu_name else "no NVIDIA GPU visible to this process",
        tensorrt_version=tensorrt_version,
        tensorrt_problem=None if tensorrt_version else "TensorRT 10 is not installed (libnvinfer.so.10 not found)",
    )


CPU_ONLY = platform(providers=(CPU_PROVIDER,), gpu_name=None, tensorrt_version=None)
GPU_WITHOUT_TENSORRT = platform(tensorrt_version=None)
GPU_BUILD_WITHOUT_GPU = platform(gpu_name=None)
FULL_GPU = platform()
