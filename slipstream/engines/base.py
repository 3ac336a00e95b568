"""The small interface the batcher and the service see of an engine.

Only `slipstream/engines/` knows ONNX Runtime; everything above it talks to an
`Engine`.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

DeviceChoice = Literal["auto", "tensorrt", "cuda", "cpu"]

Int64Array = npt.NDArray[np.int64]
Float32Array = npt.NDArray[np.float32]


class EngineError(RuntimeError):
    """An engine could not be loaded or a run failed."""


class EngineDescription(msgspec.Struct, frozen=True, kw_only=True):
    """What /info and the start-up log say about a loaded engine."""

    variant: str
    model_file: str
    device: str  # resolved device: "tensorrt", "cuda" or "cpu"
    providers: list[str]  # providers in use, in priority order
    options: dict[str, str]  # session and provider options that matter
    buckets: list[int]  # sequence-length bucket edges, ascending
    max_batch_size: int


@runtime_checkable
class Engine(Protocol):
    """A loaded model. `run` may be called from up to `parallel_runs` threads at once."""

    @property
    def input_names(self) -> list[str]: ...

    @property
    def num_labels(self) -> int: ...

    @property
    def buckets(self) -> list[int]:
        """Sequence-length edges the batcher pads to (ascending, last = max length)."""
        ...

    @property
    def max_batch_size(self) -> int: ...

    @property
    def parallel_runs(self) -> int:
        """Batches that may run at once (each `run` call on its own thread)."""
        ...

    def run(
        self,
        input_ids: Int64Array,
        attention_mask: Int64Array,
        token_type_ids: Int64Array | None = None,
    ) -> Float32Array:
        """int64 [batch, length] inputs -> fp32 logits [batch, num_labels]."""
        ...

    def warmup(self, shapes: list[tuple[int, int]]) -> None:
        """Run every (batch, length) shape once so serving never compiles."""
        ...

    def describe(self) -> EngineDescription: ...
