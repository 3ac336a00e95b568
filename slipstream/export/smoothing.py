"""Move activation outliers into the weights before int8 quantization (SmoothQuant).

Dynamic quantization gives an activation tensor one scale. A transformer's
hidden states have a few channels far larger than the rest, so that scale is
set by them and the other channels keep only a few of their 256 levels. For a
MatMul ``X @ W`` (and the fused Attention's QKV projection) the graph computes
``(X / s) @ (s * W)`` instead, exactly the same product in fp32, with
``s_k = max|X_k|^alpha / max|W_k|^(1 - alpha)`` per input channel k: the
activations become flat and the weights, quantized per output channel, absorb
the range. ``max|X_k|`` comes from a calibration pass over real text. Each
smoothed node gets its own elementwise Mul (the tensor it reads may also feed
a residual connection, which must stay unscaled).

Measurements: docs/design-notes.md#int8-batch-invariant-and-faithful.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

# Node types whose second input is a [K, N] weight multiplied by the first input.
SMOOTHABLE_OPS = ("MatMul", "Attention")
Feeds = dict[str, npt.NDArray[np.int64]]


def smoothable_nodes(model: ModelProto, op_types: Iterable[str], skip: Iterable[str] = ()) -> list[NodeProto]:
    """Nodes that dynamic quantization will quantize and that multiply an activation by a 2-D weight."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    wanted = set(op_types) & set(SMOOTHABLE_OPS)
    skipped = set(skip)
    return [
        node
        for node in model.graph.node
        if node.op_type in wanted
        and node.name not in skipped
        and len(node.input) > 1
        and node.input[1] in initializers
        and len(initializers[node.input[1]].dims) == 2
    ]


def activation_ranges(
    model: ModelProto, nodes: Sequence[NodeProto], feeds: Iterable[Feeds]
) -> dict[str, npt.NDArray[np.float32]]:
    """Per-channel max |x| of each node's activation input over the calibration runs."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = sorted({node.input[0] for node in nodes})
    present = {output.name for output in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ranges: dict[str, npt.NDArray[np.float32]] = {}
    for batch in feeds:
        for name, values in zip(names, session.run(names, batch), strict=True):
            channel_max = np.abs(values).reshape(-1, values.shape[-1]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], channel_max) if name in ranges else channel_max
    return ranges


def smooth(
    model: ModelProto, nodes: Sequence[NodeProto], ranges: dict[str, npt.NDArray[np.float32]], alpha: float
) -> int:
    """Rewrite `model` in place: each node reads X / s and multiplies by s * W. Returns nodes smoothed."""
    from onnx import numpy_helper
    from onnx.helper import make_node

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    position = {id(node): index for index, node in enumerate(model.graph.node)}
    muls: list[tuple[int, NodeProto]] = []
    for node in nodes:
        weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        activation_max = np.maximum(ranges[node.input[0]].astype(np.float32), 1e-5)
        weight_max = np.maximum(np.abs(weight).max(axis=1), 1e-5)
        scale = (activation_max**alpha / weight_max ** (1.0 - alpha)).astype(np.float32)
        prefix = f"smoothing_{position[id(node)]}"
        model.graph.initializer.append(numpy_helper.from_array(weight * scale[:, None], f"{prefix}_weight"))
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{prefix}_inverse"))
        smoothed_input = f"{prefix}_input"
        muls.append(
            (position[id(node)], make_node("Mul", [node.input[0], f"{prefix}_inverse"], [smoothed_input], name=prefix))
        )
        node.input[0] = smoothed_input
        node.input[1] = f"{prefix}_weight"
    # Each Mul goes right before the node that reads it (inserting from the end keeps positions valid).
    for index, mul in sorted(muls, key=lambda pair: pair[0], reverse=True):
        model.graph.node.insert(index, mul)
    used = {name for node in model.graph.node for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return len(muls)


def smooth_file(
    source: Path,
    destination: Path,
    *,
    op_types: Iterable[str],
    skip: Iterable[str],
    alpha: float,
    calibration: Callable[[], Iterable[Feeds]],
) -> int:
    """`smooth` from file to file, calibrated on the batches `calibration` yields."""
    import onnx

    model = onnx.load(str(source))
    nodes = smoothable_nodes(model, op_types, skip)
    if not nodes:
        onnx.save(model, str(destination))
        return 0
    ranges = activation_ranges(model, nodes, calibration())
    count = smooth(model, nodes, ranges, alpha)
    onnx.save(model, str(destination))
    return count
