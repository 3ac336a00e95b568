"""`export_model`: a Hugging Face classifier -> a validated Slipstream artifact.

Steps: load (PyTorch) -> ONNX (optimum) -> fuse (onnxruntime.transformers) ->
variants (fp32 / int8 / fp16) -> validate each against PyTorch on canned inputs
-> measure each against fp32 on real text (fidelity) and alone against
co-batched (batch invariance) -> tokenizer.json -> manifest.json, all inside a
staging directory renamed into place at the end.
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
from slipstream.export.fidelity import FidelitySettings
from slipstream.export.graph_optimization import OptimizationOptions
from slipstream.manifest import (
    FORMAT_VERSION,
    MIN_CHUNK_WINDOW,
    TOKENIZER_FILE,
    Activation,
    Execution,
    Fidelity,
    Invariance,
    Manifest,
    ProblemType,
    Quantization,
    Source,
    Validation,
    Variant,
    VariantName,
    sha256_of,
    write_manifest,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from slipstream.export.fidelity import FidelitySet, Logits

ALL_VARIANTS: tuple[str, ...] = get_args(VariantName)
INTENDED_DEVICES: dict[str, list[str]] = {
    "fp32": ["cpu", "cuda", "tensorrt"],
    "int8": ["cpu"],
    "fp16": ["cuda", "tensorrt"],
}
# Dynamic int8 quantizes activations with one scale per run: batch-invariant only run per item.
EXECUTION: dict[str, Execution] = {"fp32": "batched", "int8": "per_item", "fp16": "batched"}
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
    # Variants that were asked for but not written, and why (validation, fidelity or invariance).
    rejected: dict[str, str] = field(default_factory=dict)
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
    # fp32 is the reference every other variant is derived from and measured
    # against, and the fallback for every device: always there, always first.
    return ("fp32", *(name for name in chosen if name != "fp32"))


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
    chunk_window: int | None = None,
    optimization: OptimizationOptions | None = None,
    fidelity: FidelitySettings | None = None,
    keep_unfaithful: bool = False,
    progress: Progress = _silent,
) -> ExportOutcome:
    """Export and validate; see `export_model`. Also reports rejected variants.

    `optimization` overrides the graph fusion and int8 quantization settings
    (defaults: `OptimizationOptions()`), e.g. to compare alternatives with
    `python -m benchmarks.offline --extra NAME=MODEL.onnx`. `fidelity` sizes
    the real-text set variants are measured on against fp32 (default: the
    bars' 100 queries x 20 passages). `keep_unfaithful` writes a variant that
    misses the fidelity bars anyway, as an opt-in variant (engines serve it
    only when asked for by name) with its measured loss in the manifest."""
    from slipstream.export.fidelity import build_fidelity_set, calibration_items, pad
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
    fidelity_settings = fidelity or FidelitySettings()
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
    if chunk_window is not None and not MIN_CHUNK_WINDOW <= chunk_window <= max_length:
        raise ExportError(f"--chunk-window must be between {MIN_CHUNK_WINDOW} and {max_length} for this model")

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

        progress(
            f"building the fidelity set ({fidelity_settings.queries} queries x "
            f"{fidelity_settings.passages_per_query} passages of real text)"
        )
        fidelity_set = build_fidelity_set(
            rust_tokenizer, num_labels=int(config.num_labels), max_length=max_length, settings=fidelity_settings
        )
        calibration = [
            pad([item], input_names)
            for item in calibration_items(rust_tokenizer, max_length=max_length, settings=fidelity_settings)
        ]

        written: dict[str, Variant] = {}
        rejected: dict[str, str] = {}
        reference: Logits | None = None
        for name in chosen:
            path = staging / f"model.{name}.onnx"
            quantization: Quantization | None = None
            if name == "int8":
                progress("building the int8 variant (smoothing calibrated on real text, then dynamic quantization)")
                quantization = quantize_int8(fp32_path, path, optimization.int8, calibration=lambda: calibration)
            elif name == "fp16":
                progress("building the fp16 variant")
                convert_fp16(fp32_path, path)
            progress(f"validating {name} against PyTorch")
            validation = validate_variant(name, path, validation_set, providers=_validation_providers(name))
            if not validation.passed:
                if name == "fp32":
                    raise ExportError(f"the fp32 export does not match PyTorch: {_describe(validation)}")
                path.unlink(missing_ok=True)
                rejected[name] = f"it does not match PyTorch: {_describe(validation)}"
                progress(f"REJECTED {name}: {rejected[name]}")
                continue
            measured = _measure_served(
                name,
                path,
                fidelity_set,
                input_names,
                reference,
                fidelity_settings,
                progress,
                # fp32's logits on the set are only the reference for the other variants.
                run_set=name != "fp32" or len(chosen) > 1,
            )
            if name == "fp32":
                reference = measured.logits
            problem = measured.problem(keep_unfaithful=keep_unfaithful)
            if problem is not None:
                if name == "fp32":
                    raise ExportError(f"the fp32 export is not batch-invariant: {problem}")
                path.unlink(missing_ok=True)
                rejected[name] = problem
                progress(f"REJECTED {name}: {problem}")
                continue
            progress(f"{name} passed: {_describe(validation)}; {measured.summary()}")
            written[name] = Variant(
                name=name,  # type: ignore[arg-type]
                file=path.name,
                sha256=sha256_of(path),
                size_bytes=path.stat().st_size,
                intended_devices=INTENDED_DEVICES[name],
                validation=validation,
                execution=EXECUTION[name],
                fidelity=measured.fidelity,
                invariance=measured.invariance,
                quantization=quantization,
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
            chunk_window=chunk_window,
        )
        write_manifest(staging, manifest)
        publish(staging, output_dir, force=force)
    return ExportOutcome(
        manifest=manifest,
        output_dir=output_dir,
        rejected=rejected,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class ServedMeasurement:
    """One variant run on the fidelity set as engines run it."""

    logits: Logits | None  # None when not run on the whole set (fp32 alone needs no reference)
    fidelity: Fidelity | None  # None for fp32, the reference
    invariance: list[Invariance]
    cpu_measured: float | None  # max |co-batched - alone| on this CPU; None when not run on the CPU

    def problem(self, *, keep_unfaithful: bool) -> str | None:
        from slipstream.export.fidelity import CPU_INVARIANCE_BOUND, describe_fidelity

        if self.cpu_measured is not None and self.cpu_measured > CPU_INVARIANCE_BOUND:
            return (
                f"an item's logits moved by {self.cpu_measured:.3g} between alone and co-batched "
                f"(at most {CPU_INVARIANCE_BOUND:g} allowed on a CPU)"
            )
        if self.fidelity is not None and not self.fidelity.meets_bars and not keep_unfaithful:
            return (
                f"not faithful to fp32 on real text: {describe_fidelity(self.fidelity)}; "
                "keep it as an opt-in variant with --keep-unfaithful"
            )
        return None

    def summary(self) -> str:
        from slipstream.export.fidelity import describe_fidelity

        parts = []
        if self.fidelity is not None:
            opt_in = "" if self.fidelity.meets_bars else " -- OPT-IN ONLY, misses the bars"
            parts.append(f"against fp32 {describe_fidelity(self.fidelity)}{opt_in}")
        for record in self.invariance:
            measured = "" if record.measured_max_abs_diff is None else f", measured {record.measured_max_abs_diff:.3g}"
            parts.append(
                f"batch invariance on {'/'.join(record.devices)}: {record.guarantee} "
                f"(<= {record.max_abs_diff:.3g}{measured})"
            )
        return "; ".join(parts)


def _measure_served(
    name: str,
    path: Path,
    fidelity_set: FidelitySet,
    input_names: list[str],
    reference: Logits | None,
    settings: FidelitySettings,
    progress: Progress,
    *,
    run_set: bool,
) -> ServedMeasurement:
    from slipstream.engines.platform import physical_cores
    from slipstream.export.fidelity import (
        co_batched_max_diff,
        cpu_invariance,
        gpu_invariance,
        measure_fidelity,
        run_all,
        served,
        session_runner,
    )
    from slipstream.export.graph_optimization import exporting_cpu

    execution = EXECUTION[name]
    providers = _validation_providers(name)
    run = served(session_runner(path, providers=providers), execution)
    logits: Logits | None = None
    if run_set:
        progress(f"running {name} on the fidelity set ({len(fidelity_set.items)} inputs, {execution})")
        logits = run_all(run, fidelity_set.items, input_names)
    fidelity = None if reference is None or logits is None else measure_fidelity(fidelity_set, reference, logits)
    invariance: list[Invariance] = []
    cpu_measured: float | None = None
    # Measured where it will be served: on this CPU for the CPU variants (fp32, int8).
    if providers == ["CPUExecutionProvider"] and "cpu" in INTENDED_DEVICES[name]:
        runs = [run]
        cores = physical_cores()
        if cores > 1:  # the engine's wide runs use every core
            runs.append(served(session_runner(path, threads=cores), execution))
        step = max(1, len(fidelity_set.items) // settings.invariance_items)
        sample = fidelity_set.items[::step][: settings.invariance_items]
        cpu_measured, n_inputs = co_batched_max_diff(
            runs, sample, input_names, batch_size=settings.invariance_batch_size, seed=settings.seed
        )
        invariance.append(cpu_invariance(cpu_measured, n_inputs, execution, exporting_cpu()[0]))
    gpu = gpu_invariance(name, fidelity.max_abs_diff if fidelity is not None else None)
    if gpu is not None:
        invariance.append(gpu)
    return ServedMeasurement(logits=logits, fidelity=fidelity, invariance=invariance, cpu_measured=cpu_measured)


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
    chunk_window: int | None = None,
    optimization: OptimizationOptions | None = None,
    fidelity: FidelitySettings | None = None,
    keep_unfaithful: bool = False,
    progress: Progress = _silent,
) -> Manifest:
    """Export `model` (hub id or save_pretrained directory) to `output_dir`.

    Writes model.<variant>.onnx for each requested variant that passes
    validation against PyTorch, is batch-invariant, and (reduced precision)
    meets the fidelity bars against fp32 on real text, unless
    `keep_unfaithful`; then tokenizer.json and manifest.json, atomically. Raises ExportError
    (one-line message) on bad input, if fp32 fails validation, or if
    `output_dir` exists and `force` is False. `max_length` caps the manifest's
    max_sequence_length below what the model accepts (e.g. 512 for ModernBERT). `chunk_window` records the window
    this model ranks long inputs best with, which servers use unless told otherwise. Variants that fail validation
    are left out of the artifact; `export_artifact` reports them.
    """
    return export_artifact(
        model,
        output_dir,
        variants=variants,
        force=force,
        num_labels=num_labels,
        opset=opset,
        max_length=max_length,
        chunk_window=chunk_window,
        optimization=optimization,
        fidelity=fidelity,
        keep_unfaithful=keep_unfaithful,
        progress=progress,
    ).manifest


__all__ = [
    "ALL_VARIANTS",
    "ExportError",
    "ExportOutcome",
    "FidelitySettings",
    "OptimizationOptions",
    "default_variants",
    "export_artifact",
    "export_model",
]
