"""Fuse the exported graph for ONNX Runtime and derive the int8 and fp16 variants.

Why these choices (docs/export.md#why-these-int8-settings; the measurements are in
docs/design-notes.md#graph-fusion and #int8-quantization-settings):
* Fusion uses onnxruntime.transformers' BERT optimizer without baking in ONNX
  Runtime's own graph-level rewrites (opt_level 0): the written graph carries the
  fused Attention / SkipLayerNormalization / BiasGelu / EmbedLayerNormalization
  contrib ops, which both the CPU and CUDA providers implement, and every
  provider still applies its own optimizations at session creation.
* int8 is dynamic quantization of the fused graph (weights int8 ahead of time,
  activations quantized on the fly, one scale per run, which is why engines
  run it one item at a time: see slipstream/engines/per_item.py). Quantizing
  after fusion lets ONNX Runtime use its quantized attention kernel
  (QAttention); quantizing MatMul alone is slower. Before quantizing,
  activation outliers are moved into the weights (smoothing.py), calibrated
  on real text: without it the int8 ranking is not faithful to fp32. Weights
  are quantized per output channel. Their range is chosen here, at export,
  from this CPU's flags and recorded in the manifest: full 8-bit on a CPU
  with VNNI (more precise), 7-bit (`reduce_range`) without it, where the u8s8
  kernel would saturate intermediate int16 sums of full-range weights; an
  engine on a CPU without VNNI skips a full-range variant. The embedding
  tables stay fp32: quantizing them saves file size, not time, and costs
  fidelity.
* fp16 converts the fused graph with input and output types kept (int64 ids in,
  fp32 logits out), so clients never see half precision.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from slipstream.engines.platform import VNNI_FLAGS, cpu_flags, cpu_model_name
from slipstream.export.architectures import SUPPORTED_ARCHITECTURES
from slipstream.export.smoothing import Feeds, smooth_file
from slipstream.manifest import Quantization


class Int8Options(msgspec.Struct, frozen=True, kw_only=True):
    op_types: tuple[str, ...] = ("MatMul", "Attention")
    per_channel: bool = True
    # None: decided from this CPU's flags (full range with VNNI, 7-bit without).
    reduce_range: bool | None = None
    # SmoothQuant's migration strength; None: no smoothing.
    smoothing_alpha: float | None = 0.9
    # The first N feed-forward output projections (the MatMuls reading a Gelu)
    # stay fp32: the lowest layer's is the most sensitive to int8.
    fp32_first_feed_forward_outputs: int = 1
    nodes_kept_fp32: tuple[str, ...] = ()  # more nodes kept fp32, by name


class OptimizationOptions(msgspec.Struct, frozen=True, kw_only=True):
    fuse: bool = True
    int8: Int8Options = Int8Options()


def fuse_graph(raw_path: Path, fused_path: Path, *, model_type: str, fuse: bool = True, use_gpu: bool = False) -> bool:
    """Write the fused graph to `fused_path` (an unfused copy when `fuse` is off);
    return whether any fusion applied."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if not fuse:
        onnx.save(onnx.load(str(raw_path)), str(fused_path))
        return False
    options = FusionOptions("bert")
    options.enable_shape_inference = SUPPORTED_ARCHITECTURES[model_type].attention_fusion
    # The BERT default reduces the mask to "number of 1s per row", which is only
    # right for right-padded rows; the raw 2-D mask is right for any mask, at no
    # cost in speed on CPU (docs/design-notes.md#fused-attention-takes-the-raw-2-d-mask).
    options.use_raw_attention_mask(True)
    optimized = optimize_model(
        str(raw_path),
        model_type="bert",
        num_heads=0,
        hidden_size=0,
        optimization_options=options,
        opt_level=0,
        use_gpu=use_gpu,
    )
    stats = optimized.get_fused_operator_statistics()
    optimized.save_model_to_file(str(fused_path))
    return any(count for count in stats.values())


GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


def feed_forward_outputs(path: Path) -> list[str]:
    """Names of the MatMuls that read a Gelu (each layer's feed-forward output projection), in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    gelu_outputs = {output for node in graph.node if node.op_type in GELU_OPS for output in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[0] in gelu_outputs]


def exporting_cpu() -> tuple[str, frozenset[str]]:
    """This CPU's model name and the flags that decide the int8 weight range."""
    flags = cpu_flags()
    shown = [flag for flag in (*VNNI_FLAGS, "avx512bw", "avx2") if flag in flags]
    return f"{cpu_model_name()} ({', '.join(shown) or 'no AVX2'})", flags


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    options: Int8Options | None = None,
    calibration: Callable[[], Iterable[Feeds]] | None = None,
) -> Quantization:
    """Write the int8 variant; return how it was made (for the manifest)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = options or Int8Options()
    kept_fp32 = [*feed_forward_outputs(fp32_path)[: options.fp32_first_feed_forward_outputs], *options.nodes_kept_fp32]
    where, flags = exporting_cpu()
    has_vnni = bool(flags & set(VNNI_FLAGS))
    reduce_range = (not has_vnni) if options.reduce_range is None else options.reduce_range
    smoothing = options.smoothing_alpha if calibration is not None else None
    with tempfile.TemporaryDirectory(prefix="slipstream-int8-") as scratch:
        source = fp32_path
        if smoothing is not None and calibration is not None:
            source = Path(scratch) / "model.smoothed.onnx"
            smooth_file(
                fp32_path,
                source,
                op_types=options.op_types,
                skip=kept_fp32,
                alpha=smoothing,
                calibration=calibration,
            )
        quantize_dynamic(
            source,
            int8_path,
            op_types_to_quantize=list(options.op_types),
            per_channel=options.per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=kept_fp32,
            # Fused contrib ops have no shape-inference types; their outputs are fp32.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    return Quantization(
        method="dynamic",
        op_types=list(options.op_types),
        per_channel=options.per_channel,
        reduce_range=reduce_range,
        needs_any_cpu_flag=[] if reduce_range else list(VNNI_FLAGS),
        nodes_kept_fp32=kept_fp32,
        smoothing_alpha=smoothing,
        exported_on=where,
    )


def convert_fp16(fp32_path: Path, fp16_path: Path) -> None:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32_path)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(fp16_path))
