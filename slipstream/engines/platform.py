"""What this machine offers ONNX Runtime: providers, GPU, TensorRT, CPU cores and flags.

`onnxruntime.get_available_providers()` lists what the installed build was
compiled with, not what can run: onnxruntime-gpu lists TensorRT even when
libnvinfer is absent, and CUDA on a machine without a GPU. So the GPU and
TensorRT are probed directly (NVML and libnvinfer through ctypes, both cheap,
neither needs a CUDA context). Tests pass a hand-made `Platform` instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

# TensorRT 10 is what onnxruntime-gpu 1.2x/1.3x is built against.
_TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer.so")


@dataclass(frozen=True, kw_only=True)
class Platform:
    ort_version: str
    available_providers: tuple[str, ...]
    gpu_name: str | None  # name of the GPU at the configured device id
    gpu_problem: str | None  # why there is no usable GPU, when there is none
    tensorrt_version: str | None
    tensorrt_problem: str | None  # why TensorRT cannot be used, when it cannot


def _nvml_gpu_name(device_id: int) -> tuple[str | None, str | None]:
    """(name, None) for the GPU at device_id, or (None, why not)."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None, "no NVIDIA driver (libnvidia-ml.so.1 not found)"
    if nvml.nvmlInit_v2() != 0:
        return None, "the NVIDIA driver is installed but NVML could not initialise (no GPU visible?)"
    try:
        count = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0 or count.value == 0:
            return None, "no NVIDIA GPU visible to this process"
        if device_id >= count.value:
            return None, f"GPU {device_id} requested but only {count.value} visible"
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByIndex_v2(device_id, ctypes.byref(handle)) != 0:
            return None, f"NVML could not open GPU {device_id}"
        name = ctypes.create_string_buffer(96)
        if nvml.nvmlDeviceGetName(handle, name, len(name)) != 0:
            return None, f"NVML could not read the name of GPU {device_id}"
        return name.value.decode(errors="replace"), None
    finally:
        nvml.nvmlShutdown()


def _tensorrt_library_dirs() -> list[Path]:
    # The `tensorrt` / `tensorrt-libs` wheels put libnvinfer in site-packages,
    # where onnxruntime's own preloading finds it but ctypes does not.
    spec = importlib.util.find_spec("tensorrt_libs")
    if spec is None or spec.origin is None:
        return []
    return [Path(spec.origin).parent]


def decode_tensorrt_version(encoded: int) -> str:
    """getInferLibVersion(): major*10000+minor*100+patch from TensorRT 10, *1000 before."""
    if encoded >= 100000:
        major, rest = divmod(encoded, 10000)
    else:
        major, rest = divmod(encoded, 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def _tensorrt_version() -> tuple[str | None, str | None]:
    candidates = [*_TENSORRT_LIBRARIES]
    for directory in _tensorrt_library_dirs():
        candidates.extend(str(directory / name) for name in _TENSORRT_LIBRARIES)
    errors = []
    for candidate in candidates:
        try:
            library = ctypes.CDLL(candidate)
        except OSError as exc:
            errors.append(str(exc))
            continue
        library.getInferLibVersion.restype = ctypes.c_int32
        return decode_tensorrt_version(int(library.getInferLibVersion())), None
    return None, "TensorRT 10 is not installed (libnvinfer.so.10 not found on the library path)"


def probe_platform(device_id: int = 0) -> Platform:
    import onnxruntime

    providers = tuple(onnxruntime.get_available_providers())
    gpu_build = CUDA_PROVIDER in providers or TENSORRT_PROVIDER in providers
    if gpu_build:
        gpu_name, gpu_problem = _nvml_gpu_name(device_id)
    else:
        gpu_name, gpu_problem = None, "this onnxruntime is the CPU build (install onnxruntime-gpu)"
    if TENSORRT_PROVIDER in providers:
        trt_version, trt_problem = _tensorrt_version()
    else:
        trt_version, trt_problem = None, "this onnxruntime has no TensorRT provider"
    return Platform(
        ort_version=onnxruntime.__version__,
        available_providers=providers,
        gpu_name=gpu_name,
        gpu_problem=gpu_problem,
        tensorrt_version=trt_version,
        tensorrt_problem=trt_problem,
    )


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 quota (containers), or None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def physical_cores() -> int:
    """Physical cores this process may run on (affinity, SMT and cgroup quota respected)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
            )
        except OSError:
            cores.add(("?", str(cpu)))  # no topology: count logical CPUs
    count = len(cores) or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return count


# Integer dot-product instructions that accumulate u8 x s8 products in 32 bits.
# Without one, ONNX Runtime's u8s8 kernels (AVX2 / AVX-512BW vpmaddubsw) sum
# pairs of products in 16 bits, which saturates on full-range (8-bit) weights.
VNNI_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux names them (lscpu's Flags); empty where unknown."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return "unknown CPU"
