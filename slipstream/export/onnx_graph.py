"""PyTorch classifier -> plain ONNX graph, through optimum's exporter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slipstream.export.errors import ExportError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

TASK = "text-classification"


def export_onnx(model: PreTrainedModel, path: Path, *, opset: int | None = None) -> list[str]:
    """Write `model` as ONNX with dynamic batch and sequence axes; return its input names."""
    from optimum.exporters.onnx.convert import export
    from optimum.exporters.tasks import TasksManager

    try:
        constructor = TasksManager.get_exporter_config_constructor(
            "onnx", model=model, task=TASK, library_name="transformers"
        )
    except (KeyError, ValueError) as exc:
        raise ExportError(f"optimum cannot export {model.config.model_type} for {TASK}: {exc}") from None
    onnx_config = constructor(model.config, task=TASK)
    input_names, _ = export(model, onnx_config, path, opset=opset)
    # optimum may reorder or drop inputs that the graph does not use; the graph is the truth.
    return graph_input_names(path) or input_names


def graph_input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [value.name for value in graph.input]


def graph_output_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [value.name for value in graph.output]
