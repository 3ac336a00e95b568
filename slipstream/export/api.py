"""`export_model`: a Hugging Face classifier -> a validated Slipstream artifact.

Steps: load (PyTorch) -> ONNX (optimum) -> fuse (onnxruntime.transformers) ->
variants (fp32 / int8 / fp16) -> validate each against PyTorch -> tokenizer.json
-> manifest.json, all inside a staging directory renamed into place at the end.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, cast, get_args

import msgspec

from slipstream.export import canned_inputs
from slipstream.export.architectures import SUPPORTED_ARCHITECTURES
from slipstream.export.artifact_dir import check_destination, publish, staging_directory
from slipstream.export.errors import ExportError
from slipstream.export.graph_optimization import OptimizationOptions
from slipstream.manifest import (
    FORMAT_VERSION,
    TOKENIZER_FILE,
    Activation,
    Manifest,
    ProblemType,
    Source,
    Validation,
    Variant,
    VariantName,
    sha256_of,
    write_manifest,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

ALL_VARIANTS: tuple[str, ...] = get_args(VariantName)
INTENDED_DEVICES: dict[str, list[str]] = {
    "fp32": ["cpu", "cuda", "tensorrt"],
    "int8": ["cpu"],
    "fp16": ["cuda", "tensorrt"],
}
ACTIVATIONS: dict[str, Activation] = {
    "single_label_classification": "softmax",
    "multi_label_classification": "sigmoid",
    "regression": "none",
}
VERSIONED_PACKAGES = ("slipstream", "torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "tokenizers")

Progress = Callable[[str], None]


def _silent(message: str) -> None:
    del message


@dataclass(frozen=True)
class ExportOutcome:
    manifest: Manifest
    output_dir: Path
    # Variants that were asked for but failed validation, and why; not written.
    rejected: dict[str, Validation] = field(default_factory=dict)
    seconds: float = 0.0


def cuda_gpu_visible() -> bool:
    """True when ONNX Runtime here can run on an NVIDIA GPU."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and Path("/dev/nvidiactl").exists()


def default_variants() -> tuple[str, ...]:
    """What serving on this machine wants: fp16 on a GPU, int8 on a CPU; fp32 always
    (the reference variant, and the fallback every device can run)."""
    return ("fp32", "fp16") if cuda_gpu_visible() else ("fp32", "int8")


def resolve_variants(variants: Sequence[str] | None) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(variants)) if variants else default_variants()
    unknown = [name for name in chosen if name not in ALL_VARIANTS]
    if unknown:
        raise ExportError(f"unknown variant(s) {unknown}; choose from {list(ALL_VARIANTS)}")
    if "fp32" not in chosen:
        # fp32 is the reference every other variant is derived from and the
        # fallback for every device; an artifact always carries it.
        chosen = ("fp32", *chosen)
    return chosen


def problem_type_of(config: PretrainedConfig) -> ProblemType:
    if config.problem_type in ACTIVATIONS:
        return cast(ProblemType, config.problem_type)
    # transformers' own rule when problem_type is unset: one label is regression.
    return "regression" if config.num_labels == 1 else "single_label_classification"


def labels_of(config: PretrainedConfig) -> list[str]:
    id2label = {int(key): str(value) for key, value in (config.id2label or {}).items()}
    return [id2label.get(index, f"LABEL_{index}") for index in range(config.num_labels)]


def max_sequence_length_of(config: PretrainedConfig, tokenizer_max: int | None) -> int:
    spec = SUPPORTED_ARCHITECTURES[config.model_type]
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if positions and spec.position_offset_from_padding:
        positions -= int(config.pad_token_id or 0) + 1
    limits = [value for value in (positions, tokenizer_max) if value and 0 < value < 1_000_000]
    if not limits:
        raise ExportError(f"cannot tell the longest input {config.model_type} accepts")
    return min(limits)


def library_versions() -> dict[str, str]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _validation_providers(variant: str) -> list[str]:
    if variant == "fp16" and cuda_gpu_visible():
        return ["CUDAExecutionProvider"]
    return ["CPUExecutionProvider"]


def _describe(validation: Validation) -> str:
    rank = "n/a" if validation.rank_correlation is None else f"{validation.rank_correlation:.4f}"
    return (
        f"max |diff| {validation.max_abs_diff:.3g}, top-1 {validation.top1_agreement:.3f}, "
        f"rank corr {rank} ({validation.criteria})"
    )


def export_artifact(
    model: str,
    output_dir: Path,
    *,
    variants: Sequence[str] | None = None,
    force: bool = False,
    num_labels: int | None = None,
    opset: int | None = None,
    max_length: int | None = None,
    optimization: OptimizationOptions | None = None,
    progress: Progress = _silent,
) -> ExportOutcome:
    """Export and validate; see `export_model`. Also reports rejected variants.

    `optimization` overrides the graph fusion and int8 quantization settings
    (defaults: `OptimizationOptions()`), e.g. to compare alternatives with
    `python -m benchmarks.offline --extra NAME=MODEL.onnx`."""
    from slipstream.export.graph_optimization import convert_fp16, fuse_graph, quantize_int8
    from slipstream.export.onnx_graph import export_onnx, graph_output_names
    from slipstream.export.source import load_source
    from slipstream.export.tokenizer_files import (
        check_tokenizer_parity,
        tokenizer_info,
        write_tokenizer,
    )
    from slipstream.export.validation import build_validation_set, validate_variant

    started = time.perf_counter()
    optimization = optimization or OptimizationOptions()
    output_dir = Path(output_dir).expanduser()
    chosen = resolve_variants(variants)
    check_destination(output_dir, force=force)

    progress(f"loading {model}")
    source = load_source(model, num_labels=num_labels)
    config = source.model.config
    if source.head_is_random:
        progress("WARNING: the classification head is newly initialised (random weights)")
    model_limit = max_sequence_length_of(config, source.tokenizer.model_max_length)
    if max_length is not None and not 2 <= max_length <= model_limit:
        raise ExportError(f"--max-length must be between 2 and {model_limit} for this model")
    max_length = max_length or model_limit

    with staging_directory(output_dir) as staging, tempfile.TemporaryDirectory(prefix="slipstream-export-") as scratch:
        progress("writing tokenizer.json")
        rust_tokenizer = write_tokenizer(source.tokenizer, staging / TOKENIZER_FILE)
        check_tokenizer_parity(
            source.tokenizer,
            rust_tokenizer,
            canned_inputs.SINGLES,
            list(zip(canned_inputs.QUERIES, canned_inputs.PASSAGES, strict=True)),
        )
        # Checked before the slow steps: batching needs a pad token.
        tokenizer_facts = tokenizer_info(source.tokenizer, uses_token_type_ids=False)
        raw_path = Path(scratch) / "model.raw.onnx"
        progress("exporting to ONNX")
        export_onnx(source.model, raw_path, opset=opset)
        progress("fusing the graph for ONNX Runtime")
        fp32_path = staging / "model.fp32.onnx"
        fuse_graph(raw_path, fp32_path, model_type=config.model_type, fuse=optimization.fuse)
        input_names = _input_names(fp32_path)
        output_name = graph_output_names(fp32_path)[0]

        progress("computing PyTorch reference logits")
        validation_set = build_validation_set(
            source.model, source.tokenizer, input_names=input_names, max_length=max_length
        )

        written: dict[str, Variant] = {}
        rejected: dict[str, Validation] = {}
        builders: dict[str, Callable[[Path], None]] = {
            "fp32": lambda path: None,
            "int8": lambda path: quantize_int8(fp32_path, path, optimization.int8),
            "fp16": lambda path: convert_fp16(fp32_path, path),
        }
        for name in chosen:
            path = staging / f"model.{name}.onnx"
            if name != "fp32":
                progress(f"building the {name} variant")
                builders[name](path)
            progress(f"validating {name}")
            validation = validate_variant(name, path, validation_set, providers=_validation_providers(name))
            if not validation.passed:
                path.unlink(missing_ok=True)
                rejected[name] = validation
                if name == "fp32":
                    raise ExportError(f"the fp32 export does not match PyTorch: {_describe(validation)}")
                progress(f"REJECTED {name}: {_describe(validation)}")
                continue
            progress(f"{name} passed: {_describe(validation)}")
            written[name] = Variant(
                name=name,  # type: ignore[arg-type]
                file=path.name,
                sha256=sha256_of(path),
                size_bytes=path.stat().st_size,
                intended_devices=INTENDED_DEVICES[name],
                validation=validation,
            )

        problem_type = problem_type_of(config)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            source=Source(model=model, revision=source.revision),
            architecture=type(source.model).__name__,
            model_type=config.model_type,
            labels=labels_of(config),
            num_labels=int(config.num_labels),
            problem_type=problem_type,
            activation=ACTIVATIONS[problem_type],
            max_sequence_length=max_length,
            input_names=input_names,
            output_name=output_name,
            tokenizer=msgspec.structs.replace(tokenizer_facts, uses_token_type_ids="token_type_ids" in input_names),
            variants=written,
            versions=library_versions(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        write_manifest(staging, manifest)
        publish(staging, output_dir, force=force)
    return ExportOutcome(
        manifest=manifest,
        output_dir=output_dir,
        rejected=rejected,
        seconds=time.perf_counter() - started,
    )


def _input_names(path: Path) -> list[str]:
    from slipstream.export.onnx_graph import graph_input_names

    return graph_input_names(path)


def export_model(
    model: str,
    output_dir: Path,
    *,
    variants: Sequence[str] | None = None,
    force: bool = False,
    num_labels: int | None = None,
    opset: int | None = None,
    max_length: int | None = None,
    optimization: OptimizationOptions | None = None,
    progress: Progress = _silent,
) -> Manifest:
    """Export `model` (hub id or save_pretrained directory) to `output_dir`.

    Writes model.<variant>.onnx for each requested variant that passes
    validation, tokenizer.json and manifest.json, atomically. Raises ExportError
    (one-line message) on bad input, if fp32 fails validation, or if
    `output_dir` exists and `force` is False. `max_length` caps the manifest's
    max_sequence_length below what the model accepts (e.g. 512 for ModernBERT). Variants that fail validation are
    left out of the artifact; `export_artifact` reports them.
    """
    return export_artifact(
        model,
        output_dir,
        variants=variants,
        force=force,
        num_labels=num_labels,
        opset=opset,
        max_length=max_length,
        optimization=optimization,
        progress=progress,
    ).manifest


__all__ = [
    "ALL_VARIANTS",
    "ExportError",
    "ExportOutcome",
    "OptimizationOptions",
    "default_variants",
    "export_artifact",
    "export_model",
]
