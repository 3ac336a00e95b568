"""CUDA execution provider: provider options, and a runner with IO binding.

The runner keeps one set of device buffers per (batch, length) shape: the
batcher only produces bucket-edge lengths, so the set is small and fixed after
warm-up. Inputs are copied host->device into the shape's buffers, the session
runs on bound device memory, and only the logits come back to the host.
Because the buffers' addresses never change for a shape, each shape can also
be captured once as a CUDA graph and replayed (ORT's `gpu_graph_id` run
option selects the graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from slipstream.engines.base import Float32Array, Int64Array
from slipstream.engines.settings import CudaSettings

# ORT does this many ordinary runs of a graph id before it captures it.
CUDA_GRAPH_WARMUP_RUNS = 3


def provider_options(settings: CudaSettings, variant: str) -> dict[str, str]:
    use_tf32 = settings.use_tf32 if settings.use_tf32 is not None else variant != "fp32"
    options = {
        "device_id": str(settings.device_id),
        "cudnn_conv_algo_search": settings.cudnn_conv_algo_search,
        "do_copy_in_default_stream": "1" if settings.do_copy_in_default_stream else "0",
        "arena_extend_strategy": settings.arena_extend_strategy,
        "use_tf32": "1" if use_tf32 else "0",
        "enable_cuda_graph": "1" if settings.cuda_graphs else "0",
    }
    if settings.gpu_mem_limit:
        options["gpu_mem_limit"] = str(settings.gpu_mem_limit)
    return options


@dataclass
class _ShapeBinding:
    binding: ort.IOBinding
    inputs: dict[str, ort.OrtValue]
    output: ort.OrtValue
    run_options: ort.RunOptions


class DeviceBoundRunner:
    """Runs one session on device buffers reused per shape (CUDA and TensorRT)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        input_names: list[str],
        output_name: str,
        num_labels: int,
        device_id: int,
        cuda_graphs: bool,
        device_type: str = "cuda",  # "cpu" lets tests exercise the binding logic without a GPU
    ) -> None:
        self._session = session
        self._input_names = input_names
        self._output_name = output_name
        self._num_labels = num_labels
        self._device_id = device_id
        self._cuda_graphs = cuda_graphs
        self._device_type = device_type
        self._bindings: dict[tuple[int, int], _ShapeBinding] = {}

    def _bind(self, shape: tuple[int, int]) -> _ShapeBinding:
        binding = self._session.io_binding()
        inputs = {}
        for name in self._input_names:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.int64, self._device_type, self._device_id)
            binding.bind_ortvalue_input(name, value)
            inputs[name] = value
        output = ort.OrtValue.ortvalue_from_shape_and_type(
            [shape[0], self._num_labels], np.float32, self._device_type, self._device_id
        )
        binding.bind_ortvalue_output(self._output_name, output)
        run_options = ort.RunOptions()
        if self._cuda_graphs:
            # Graph ids start at 1; -1 would mean "do not capture".
            run_options.add_run_config_entry("gpu_graph_id", str(len(self._bindings) + 1))
        shape_binding = _ShapeBinding(binding, inputs, output, run_options)
        self._bindings[shape] = shape_binding
        return shape_binding

    def run(self, feeds: dict[str, Int64Array]) -> Float32Array:
        first = feeds[self._input_names[0]]
        shape = (int(first.shape[0]), int(first.shape[1]))
        bound = self._bindings.get(shape) or self._bind(shape)
        for name in self._input_names:
            bound.inputs[name].update_inplace(np.ascontiguousarray(feeds[name]))
        bound.binding.synchronize_inputs()
        self._session.run_with_iobinding(bound.binding, bound.run_options)
        bound.binding.synchronize_outputs()
        logits: Float32Array = bound.output.numpy()
        return logits

    @property
    def warmup_runs(self) -> int:
        return CUDA_GRAPH_WARMUP_RUNS if self._cuda_graphs else 1

    @property
    def bound_shapes(self) -> list[tuple[int, int]]:
        return sorted(self._bindings)
