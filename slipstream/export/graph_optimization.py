"""Fuse the exported graph for ONNX Runtime and derive the int8 and fp16 variants.

Why these choices (docs/export.md#why-these-int8-settings; the measurements are in
docs/design-notes.md#graph-fusion and #int8-quantization-settings):
* Fusion uses onnxruntime.transformers' BERT optimizer without baking in ONNX
  Runtime's own graph-level rewrites (opt_level 0): the written graph carries the
  fused Attention / SkipLayerNormalization / BiasGelu / EmbedLayerNormalization
  contrib ops, which both the CPU and CUDA providers implement, and every
  provider still applies its own optimizations at session creation.
* int8 is dynamic quantization of the fused graph (weights int8 ahead of time,
  activations quantized on the fly). Quantizing after fusion lets ONNX Runtime
  use its quantized attention kernel (QAttention). Weights are quantized per
  output channel with a 7-bit range: on AVX2 CPUs without VNNI the u8s8 kernel
  can saturate intermediate int16 sums, and the reduced range avoids that while
  per-channel scales win back the precision. The embedding tables are quantized
  too (Gather / EmbedLayerNormalization): that costs no speed and makes the
  file several times smaller. Quantizing MatMul alone is slower than with
  Attention included, and of the op sets and scale options tried this one
  agreed best with PyTorch at the same speed.
* fp16 converts the fused graph with input and output types kept (int64 ids in,
  fp32 logits out), so clients never see half precision.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from slipstream.export.architectures import SUPPORTED_ARCHITECTURES


class Int8Options(msgspec.Struct, frozen=True, kw_only=True):
    op_types: tuple[str, ...] = ("MatMul", "Attention", "Gather", "EmbedLayerNormalization")
    per_channel: bool = True
    reduce_range: bool = True


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


def quantize_int8(fp32_path: Path, int8_path: Path, options: Int8Options | None = None) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = options or Int8Options()
    quantize_dynamic(
        fp32_path,
        int8_path,
        op_types_to_quantize=list(options.op_types),
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        weight_type=QuantType.QInt8,
        # Fused contrib ops have no shape-inference types; their outputs are fp32.
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def convert_fp16(fp32_path: Path, fp16_path: Path) -> None:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32_path)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(fp16_path))
