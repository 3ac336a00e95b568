"""TensorRT execution provider: shape profiles, cache keys, provider options.

Every (batch, length) shape the batcher can send must fall inside a profile
built at start-up; otherwise ONNX Runtime would rebuild an engine in the middle
of serving. The batcher pads every batch to a bucket edge and never exceeds
max_batch_size, so one profile per bucket (batch 1..max, length = the edge)
covers every shape exactly. ONNX Runtime keeps a TensorRT execution context on
profile 0 (microsoft/onnxruntime#31624 is still open), so several profiles
mean several sessions: one per profile.

Engine and timing caches are keyed by everything that makes a built engine
invalid: the model file's sha256, the onnxruntime and TensorRT versions, the
GPU, the profile and the precision flags. A changed key is a new directory,
so a stale engine is never found, let alone reused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from slipstream.engines.settings import TensorRtSettings


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max (batch, length) of every dynamic input, for one session."""

    buckets: tuple[int, ...]  # the bucket edges this profile serves
    min_shape: tuple[int, int]
    opt_shape: tuple[int, int]
    max_shape: tuple[int, int]

    def covers(self, batch: int, length: int) -> bool:
        return self.min_shape[0] <= batch <= self.max_shape[0] and self.min_shape[1] <= length <= self.max_shape[1]

    def option_strings(self, input_names: list[str]) -> dict[str, str]:
        """The trt_profile_* provider options ("name:BxL,name:BxL")."""

        def render(shape: tuple[int, int]) -> str:
            return ",".join(f"{name}:{shape[0]}x{shape[1]}" for name in input_names)

        return {
            "trt_profile_min_shapes": render(self.min_shape),
            "trt_profile_opt_shapes": render(self.opt_shape),
            "trt_profile_max_shapes": render(self.max_shape),
        }


def build_profiles(buckets: list[int], max_batch_size: int, layout: str) -> list[ShapeProfile]:
    """Profiles covering every (1..max_batch_size, edge) shape.

    opt is the full batch: under load batches are full and that is where
    throughput is decided; a batch of one is fast on any kernel.
    """
    if layout == "per_bucket":
        return [ShapeProfile((edge,), (1, edge), (max_batch_size, edge), (max_batch_size, edge)) for edge in buckets]
    if layout == "single":
        # Tune for the median edge: the spread of lengths is what one profile must serve.
        opt_length = buckets[len(buckets) // 2]
        return [
            ShapeProfile(tuple(buckets), (1, buckets[0]), (max_batch_size, opt_length), (max_batch_size, buckets[-1]))
        ]
    raise ValueError(f"unknown TensorRT profile layout {layout!r}")


def profile_for(profiles: list[ShapeProfile], batch: int, length: int) -> int:
    """Index of the first profile covering (batch, length), or -1."""
    for index, profile in enumerate(profiles):
        if profile.covers(batch, length):
            return index
    return -1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


@dataclass(frozen=True)
class CacheKey:
    model_sha256: str
    ort_version: str
    tensorrt_version: str
    gpu_name: str
    profile: ShapeProfile
    fp16: bool
    layer_norm_fp32_fallback: bool
    builder_optimization_level: int

    def digest(self) -> str:
        fields = {
            "model_sha256": self.model_sha256,
            "ort_version": self.ort_version,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "profile": [self.profile.min_shape, self.profile.opt_shape, self.profile.max_shape],
            "fp16": self.fp16,
            "layer_norm_fp32_fallback": self.layer_norm_fp32_fallback,
            "builder_optimization_level": self.builder_optimization_level,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def engine_dir(self, cache_root: Path) -> Path:
        # Readable prefix for whoever lists the cache; the digest makes it unique.
        return cache_root / "engines" / f"{self.model_sha256[:12]}-{self.digest()[:16]}"

    def timing_dir(self, cache_root: Path) -> Path:
        # A timing cache records kernel timings, valid for one TensorRT version
        # on one GPU model whatever the network; sharing it across models
        # speeds up every later build.
        return cache_root / "timing" / f"trt{_slug(self.tensorrt_version)}-{_slug(self.gpu_name)}"


def provider_options(
    settings: TensorRtSettings,
    key: CacheKey,
    input_names: list[str],
    device_id: int,
) -> dict[str, str]:
    """TensorRT provider options for one profile's session (values as strings, as ORT takes them)."""
    cache_root = Path(settings.cache_dir).expanduser()
    engine_dir = key.engine_dir(cache_root)
    timing_dir = key.timing_dir(cache_root)
    engine_dir.mkdir(parents=True, exist_ok=True)
    timing_dir.mkdir(parents=True, exist_ok=True)
    options = {
        "device_id": str(device_id),
        "trt_fp16_enable": str(settings.fp16),
        "trt_layer_norm_fp32_fallback": str(settings.layer_norm_fp32_fallback),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(engine_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(timing_dir),
        "trt_builder_optimization_level": str(settings.builder_optimization_level),
        **key.profile.option_strings(input_names),
    }
    if settings.max_workspace_bytes:
        options["trt_max_workspace_size"] = str(settings.max_workspace_bytes)
    return options
