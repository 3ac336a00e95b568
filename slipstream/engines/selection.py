"""Which device and which model variant an engine uses.

An explicit device is strict: if it cannot be used, loading fails and the
error says what is missing. `auto` walks TensorRT -> CUDA -> CPU and records
why each better option was passed over, for its one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Set
from dataclasses import dataclass

from slipstream.engines.base import DeviceChoice, EngineError
from slipstream.engines.platform import CPU_PROVIDER, CUDA_PROVIDER, TENSORRT_PROVIDER, Platform
from slipstream.manifest import Manifest, Variant

log = logging.getLogger("slipstream.engines")

DEVICE_ORDER: tuple[str, ...] = ("tensorrt", "cuda", "cpu")

# Preferred variants per device, best first; fp32 is always the last resort. A
# reduced-precision variant is only taken unasked when its export measured it
# faithful to fp32 (`Fidelity.meets_bars`); otherwise it is opt-in by name.
_VARIANT_PREFERENCE: dict[str, tuple[str, ...]] = {
    "cpu": ("int8", "fp32"),
    "cuda": ("fp16", "fp32"),
    "tensorrt": ("fp16", "fp32"),
}


@dataclass(frozen=True)
class DeviceDecision:
    device: str  # "tensorrt" | "cuda" | "cpu"
    reason: str  # one line: why this device


def device_problem(device: str, platform: Platform) -> str | None:
    """Why `device` cannot be used here, or None if it can."""
    providers = platform.available_providers
    if device == "cpu":
        return None if CPU_PROVIDER in providers else "onnxruntime has no CPU provider"
    if device == "cuda":
        if CUDA_PROVIDER not in providers:
            return (
                f"onnxruntime {platform.ort_version} has no CUDA provider (providers: {', '.join(providers)}); "
                "install onnxruntime-gpu (pip install 'slipstream[gpu]')"
            )
        if platform.gpu_name is None:
            return f"no usable NVIDIA GPU: {platform.gpu_problem}"
        return None
    if device == "tensorrt":
        if TENSORRT_PROVIDER not in providers:
            return (
                f"onnxruntime {platform.ort_version} has no TensorRT provider (providers: {', '.join(providers)}); "
                "install onnxruntime-gpu (pip install 'slipstream[gpu]')"
            )
        if platform.gpu_name is None:
            return f"no usable NVIDIA GPU: {platform.gpu_problem}"
        if platform.tensorrt_version is None:
            return f"{platform.tensorrt_problem}; install TensorRT 10 (pip install tensorrt) or use device=cuda"
        # TensorRT falls back to CUDA for nodes it cannot take, so both are needed.
        if CUDA_PROVIDER not in providers:
            return "the CUDA provider (TensorRT's fallback) is missing from this onnxruntime"
        return None
    raise EngineError(f"unknown device {device!r}; choose one of auto, {', '.join(DEVICE_ORDER)}")


def resolve_device(choice: DeviceChoice | str, platform: Platform) -> DeviceDecision:
    if choice != "auto":
        problem = device_problem(choice, platform)
        if problem is not None:
            raise EngineError(f"device {choice!r} was requested but cannot be used: {problem}")
        return DeviceDecision(choice, f"device {choice!r} requested explicitly")
    passed_over: list[str] = []
    for device in DEVICE_ORDER:
        problem = device_problem(device, platform)
        if problem is None:
            detail = f" on {platform.gpu_name}" if device != "cpu" else ""
            because = f" ({'; '.join(passed_over)})" if passed_over else ""
            return DeviceDecision(device, f"auto chose {device}{detail}{because}")
        passed_over.append(f"not {device}: {problem}")
    raise EngineError("no usable device: " + "; ".join(passed_over))


def next_device(device: str) -> str | None:
    """The device `auto` tries when `device` failed at session creation."""
    index = DEVICE_ORDER.index(device)
    return DEVICE_ORDER[index + 1] if index + 1 < len(DEVICE_ORDER) else None


def missing_cpu_flags(variant: Variant, cpu_flags: Set[str] | None) -> str | None:
    """Why this CPU cannot compute the variant's integer kernels exactly, or None if it can."""
    quantization = variant.quantization
    if quantization is None or not quantization.needs_any_cpu_flag or cpu_flags is None:
        return None
    needed = quantization.needs_any_cpu_flag
    if cpu_flags & set(needed):
        return None
    return (
        f"its int8 weights use the full 8-bit range (chosen at export on {quantization.exported_on}), which needs "
        f"one of the CPU flags {', '.join(needed)} to compute without saturating, and this CPU has none; "
        "export it again on this kind of CPU (it then uses 7-bit weights) or serve fp32"
    )


def _not_default_because(variant: Variant, cpu_flags: Set[str] | None) -> str | None:
    if not variant.validation.passed:
        return "it failed validation at export"
    if variant.name != "fp32":
        if variant.fidelity is None:
            return "its export recorded no fidelity to fp32 (an artifact from before 0.2; export it again)"
        if not variant.fidelity.meets_bars:
            fidelity = variant.fidelity
            spearman = "" if fidelity.spearman_per_query is None else f", Spearman {fidelity.spearman_per_query:.4f}"
            return (
                f"it is opt-in: against fp32 it measured top-1 {fidelity.top1_agreement:.3f}{spearman}, "
                f"short of {fidelity.criteria}"
            )
    return missing_cpu_flags(variant, cpu_flags)


def choose_variant(manifest: Manifest, device: str, requested: str | None, cpu_flags: Set[str] | None = None) -> str:
    """The variant to load: the requested one, else the device's preferred one that is
    validated, faithful to fp32 and computable here. `cpu_flags` None: not checked."""
    if requested is not None:
        variant = manifest.variant(requested)  # raises ManifestError listing what exists
        if not variant.validation.passed:
            raise EngineError(f"variant {requested!r} failed validation at export ({variant.validation.criteria})")
        problem = missing_cpu_flags(variant, cpu_flags) if device == "cpu" else None
        if problem is not None:
            raise EngineError(f"variant {requested!r} cannot run on this CPU: {problem}")
        return requested
    for name in _VARIANT_PREFERENCE[device]:
        candidate = manifest.variants.get(name)
        if candidate is None:
            continue
        problem = _not_default_because(candidate, cpu_flags if device == "cpu" else None)
        if problem is None:
            return name
        log.info("engine variant: not %s by default on %s: %s", name, device, problem)
    raise EngineError(
        f"the artifact has no validated variant usable on {device} "
        f"(wanted one of {list(_VARIANT_PREFERENCE[device])}, has {sorted(manifest.variants)})"
    )
