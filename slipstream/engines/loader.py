"""`load_engine`: an export artifact + a device choice -> a ready Engine."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import onnxruntime as ort

from slipstream.engines import cuda, tensorrt
from slipstream.engines.base import DeviceChoice, EngineError
from slipstream.engines.buckets import cap_buckets, default_buckets
from slipstream.engines.onnx_engine import EngineSpec, HostRunner, OnnxEngine, Runner
from slipstream.engines.platform import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    Platform,
    cpu_flags,
    probe_platform,
)
from slipstream.engines.selection import choose_variant, device_problem, next_device, resolve_device
from slipstream.engines.session_options import build_session_options, cpu_threading, wide_threads
from slipstream.engines.settings import EngineSettings
from slipstream.manifest import Manifest, ManifestError, load_manifest, verify_variant_file

log = logging.getLogger("slipstream.engines")

_EXPECTED_PROVIDER = {"cpu": CPU_PROVIDER, "cuda": CUDA_PROVIDER, "tensorrt": TENSORRT_PROVIDER}


def load_engine(
    artifact_dir: Path | str,
    device: DeviceChoice | str = "auto",
    variant: str | None = None,
    settings: EngineSettings | None = None,
    *,
    platform: Platform | None = None,
) -> OnnxEngine:
    """Load an artifact's model on a device.

    device: "auto" (TensorRT, else CUDA, else CPU; logs its choice), or a strict
    "tensorrt" / "cuda" / "cpu" that fails with what is missing.
    variant: None follows the device (int8 on CPU, fp16 on GPU, fp32 otherwise).
    platform: what the machine offers; probed when None (tests pass a fake).
    Raises EngineError for anything that prevents serving, including an
    artifact whose model file does not match its manifest's sha256.
    """
    settings = settings or EngineSettings()
    try:
        manifest = load_manifest(artifact_dir)
    except ManifestError as exc:
        raise EngineError(str(exc)) from exc
    platform = platform or probe_platform(settings.cuda.device_id)
    decision = resolve_device(device, platform)
    if device == "auto":
        log.info("engine device: %s", decision.reason)
    current: str | None = decision.device
    while current is not None:
        try:
            return _load_on(Path(artifact_dir), manifest, current, variant, settings, platform)
        except EngineError as exc:
            fallback = _next_usable(current, platform) if device == "auto" else None
            if fallback is None:
                raise
            log.warning("engine device: %s failed (%s); auto falls back to %s", current, exc, fallback)
            current = fallback
    raise AssertionError("unreachable: the loop returns or raises")


def _next_usable(device: str, platform: Platform) -> str | None:
    candidate = next_device(device)
    while candidate is not None and device_problem(candidate, platform) is not None:
        candidate = next_device(candidate)
    return candidate


def _buckets_for(settings: EngineSettings, device: str, max_length: int) -> list[int]:
    if settings.buckets is not None:
        return cap_buckets(settings.buckets, max_length)
    return default_buckets(device, max_length)


def _create_session(
    model_path: Path,
    device: str,
    providers: list[str | tuple[str, dict[str, str]]],
    session_options: ort.SessionOptions,
) -> ort.InferenceSession:
    try:
        session = ort.InferenceSession(str(model_path), session_options, providers=providers)
    except Exception as exc:  # ORT raises its own types (Fail, InvalidGraph, ...)
        raise EngineError(f"onnxruntime could not create a {device} session for {model_path.name}: {exc}") from exc
    # ORT falls back to the next provider (ultimately CPU) with only a warning
    # when a provider's libraries fail to load; a strict device must not.
    in_use = session.get_providers()
    expected = _EXPECTED_PROVIDER[device]
    if not in_use or in_use[0] != expected:
        raise EngineError(
            f"{expected} did not load (onnxruntime is using {in_use}); "
            "check the CUDA, cuDNN and TensorRT libraries onnxruntime-gpu needs "
            "(onnxruntime's warning above names the missing one)"
        )
    return session


def _load_on(
    artifact_dir: Path,
    manifest: Manifest,
    device: str,
    requested_variant: str | None,
    settings: EngineSettings,
    platform: Platform,
) -> OnnxEngine:
    variant_name = choose_variant(manifest, device, requested_variant, cpu_flags() if device == "cpu" else None)
    variant = manifest.variant(variant_name)
    try:
        model_path = verify_variant_file(artifact_dir, variant)
    except ManifestError as exc:
        raise EngineError(str(exc)) from exc
    buckets = _buckets_for(settings, device, settings.longest_input(manifest.max_sequence_length))
    session_options, options = build_session_options(settings, device)
    input_names = list(manifest.input_names)
    runners: list[Runner]
    parallel_runs = 1
    wide_runner: Runner | None = None
    wide_from_length = 0
    if device == "cpu":
        parallel_runs = cpu_threading(settings.cpu)[1]
        session = _create_session(model_path, device, [CPU_PROVIDER], session_options)
        runners = [HostRunner(session, manifest.output_name)]
        wide = wide_threads(settings.cpu)
        if wide:
            wide_options, _ = build_session_options(settings, device, intra_op_threads=wide)
            wide_session = _create_session(model_path, device, [CPU_PROVIDER], wide_options)
            wide_runner = HostRunner(wide_session, manifest.output_name)
            wide_from_length = settings.cpu.wide_from_length
        options |= {"wide_from_length": str(wide_from_length), "wide_threads": str(wide)}
        if variant.runs_per_item:
            options["execution"] = "per_item"
        runner_of_bucket = [0] * len(buckets)
        providers = session.get_providers()
    elif device == "cuda":
        cuda_options = cuda.provider_options(settings.cuda, variant_name)
        session = _create_session(model_path, device, [(CUDA_PROVIDER, cuda_options), CPU_PROVIDER], session_options)
        runners = [
            cuda.DeviceBoundRunner(
                session,
                input_names,
                manifest.output_name,
                manifest.num_labels,
                settings.cuda.device_id,
                settings.cuda.cuda_graphs,
            )
        ]
        runner_of_bucket = [0] * len(buckets)
        providers = session.get_providers()
        options |= {f"cuda.{name}": value for name, value in cuda_options.items()}
    else:
        runners, runner_of_bucket, trt_options, providers = _tensorrt_runners(
            model_path, manifest, variant.sha256, variant_name, buckets, settings, platform, session_options
        )
        options |= trt_options
    spec = EngineSpec(
        variant=variant_name,
        model_file=variant.file,
        device=device,
        providers=list(providers),
        options=options,
        buckets=buckets,
        max_batch_size=settings.max_batch_size,
        input_names=input_names,
        num_labels=manifest.num_labels,
        pad_token_id=manifest.tokenizer.pad_token_id,
        parallel_runs=parallel_runs,
        fixed_shapes=device != "cpu",
        wide_from_length=wide_from_length,
        per_item=variant.runs_per_item,
    )
    log.info(
        "engine loaded: %s variant on %s (%s), %d buckets %s..%s, max batch %d%s, %d run(s) at once",
        variant_name,
        device,
        ", ".join(spec.providers),
        len(buckets),
        buckets[0],
        buckets[-1],
        settings.max_batch_size,
        " (each item run alone, unpadded: batch-invariant)" if spec.per_item else "",
        parallel_runs,
    )
    return OnnxEngine(spec, runners, runner_of_bucket, wide_runner)


def _tensorrt_runners(
    model_path: Path,
    manifest: Manifest,
    model_sha256: str,
    variant_name: str,
    buckets: list[int],
    settings: EngineSettings,
    platform: Platform,
    session_options: ort.SessionOptions,
) -> tuple[list[Runner], list[int], dict[str, str], list[str]]:
    """One session per shape profile; nodes TensorRT rejects run on CUDA (listed before CPU)."""
    trt_settings = settings.tensorrt
    profiles = tensorrt.build_profiles(buckets, settings.max_batch_size, trt_settings.profiles)
    cuda_options = cuda.provider_options(
        # CUDA graphs belong to the CUDA path; TensorRT engines are already one launch.
        msgspec.structs.replace(settings.cuda, cuda_graphs=False),
        variant_name,
    )
    runners: list[Runner] = []
    first_options: dict[str, str] = {}
    providers: list[str] = []
    for profile in profiles:
        key = tensorrt.CacheKey(
            model_sha256=model_sha256,
            ort_version=platform.ort_version,
            tensorrt_version=platform.tensorrt_version or "unknown",
            gpu_name=platform.gpu_name or "unknown",
            profile=profile,
            fp16=trt_settings.fp16,
            layer_norm_fp32_fallback=trt_settings.layer_norm_fp32_fallback,
            builder_optimization_level=trt_settings.builder_optimization_level,
        )
        trt_options = tensorrt.provider_options(trt_settings, key, list(manifest.input_names), settings.cuda.device_id)
        first_options = first_options or trt_options
        session = _create_session(
            model_path,
            "tensorrt",
            [(TENSORRT_PROVIDER, trt_options), (CUDA_PROVIDER, cuda_options), CPU_PROVIDER],
            session_options,
        )
        providers = providers or session.get_providers()
        runners.append(
            cuda.DeviceBoundRunner(
                session,
                list(manifest.input_names),
                manifest.output_name,
                manifest.num_labels,
                settings.cuda.device_id,
                cuda_graphs=False,
            )
        )
    runner_of_bucket = [tensorrt.profile_for(profiles, settings.max_batch_size, edge) for edge in buckets]
    described = {
        "tensorrt.profiles": f"{len(profiles)} ({trt_settings.profiles})",
        "tensorrt.cache_dir": str(Path(trt_settings.cache_dir).expanduser()),
    }
    for name in ("trt_fp16_enable", "trt_layer_norm_fp32_fallback", "trt_builder_optimization_level"):
        described[f"tensorrt.{name}"] = first_options[name]
    described |= {f"cuda.{name}": value for name, value in cuda_options.items()}
    return runners, runner_of_bucket, described, providers
