"""engines stage: export artifact -> ONNX Runtime sessions behind the `Engine` interface.

The only part of Slipstream that imports onnxruntime, and lazily: importing
this package is cheap; calling `load_engine` pulls onnxruntime in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slipstream.engines.settings import CpuSettings, CudaSettings, EngineSettings, TensorRtSettings

if TYPE_CHECKING:
    from slipstream.engines.onnx_engine import OnnxEngine
    from slipstream.engines.platform import Platform

__all__ = ["CpuSettings", "CudaSettings", "EngineSettings", "TensorRtSettings", "load_engine"]


def load_engine(
    artifact_dir: Path | str,
    device: str = "auto",
    variant: str | None = None,
    settings: EngineSettings | None = None,
    *,
    platform: Platform | None = None,
) -> OnnxEngine:
    """Load an artifact's model on a device; see `slipstream.engines.loader.load_engine`."""
    from slipstream.engines.loader import load_engine as load

    return load(artifact_dir, device, variant, settings, platform=platform)
