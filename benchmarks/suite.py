"""The benchmark run: workloads, offline ceiling, every server config, the summary.

One process drives; each server under test and each load point's generator
run as subprocesses. The server's /metrics is scraped around every point so
batch sizes and padding belong to that point's load.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np
from tqdm import tqdm

from benchmarks import environment, server_metrics
from benchmarks.http_client import fetch
from benchmarks.invariance import served_invariance
from benchmarks.loadgen import LoadPlan, Point, PointResult, RequestSet
from benchmarks.servers import ServerError, die_with_parent, free_port, pipeline_server_command, running_server
from benchmarks.settings import Profile, ServerConfig, server_configs
from benchmarks.workloads import Workload, length_histogram, rerank_requests, single_texts, token_lengths
from slipstream.engines.buckets import padding_efficiency
from slipstream.engines.platform import physical_cores
from slipstream.manifest import TOKENIZER_FILE, Fidelity, Invariance, Manifest, load_manifest


class WorkloadSummary(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    fingerprint: str
    spec: dict[str, Any]
    requests: int
    sequences: int
    tokens_mean: float
    tokens_p50: float
    tokens_p90: float
    tokens_p99: float
    tokens_max: int
    token_histogram: dict[str, int]  # tokens per sequence, special tokens included, after truncation


class PointRecord(msgspec.Struct, frozen=True, kw_only=True):
    config: str
    workload: str
    result: PointResult
    server: server_metrics.ServerMetrics | None


class ConfigRun(msgspec.Struct, kw_only=True):
    config: ServerConfig
    startup_s: float | None = None
    info: dict[str, Any] | None = None  # the server's /info, when it has one
    points: list[PointRecord] = []
    error: str | None = None
    # Rerank pairs scored under load against the same pairs sent alone: max |difference|, and how many.
    served_invariance_max_abs_diff: float | None = None
    served_invariance_pairs: int = 0


class VariantFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One variant of the artifact, as its export measured it."""

    name: str
    execution: str
    opt_in: bool  # served only when asked for by name
    fidelity: Fidelity | None  # against fp32; None for fp32
    invariance: list[Invariance]


def variant_facts(manifest: Manifest) -> list[VariantFacts]:
    return [
        VariantFacts(
            name=name,
            execution="per_item" if variant.runs_per_item else "batched",
            opt_in=name != "fp32" and (variant.fidelity is None or not variant.fidelity.meets_bars),
            fidelity=variant.fidelity,
            invariance=variant.invariance,
        )
        for name, variant in manifest.variants.items()
    ]


class OfflineCeiling(msgspec.Struct, frozen=True, kw_only=True):
    """The served engine run directly on the single-text workload's bucketed batches."""

    variant: str
    device: str
    providers: list[str]
    texts: int
    rounds: int  # median of this many timed passes, after a warm-up pass
    parallel_runs: int = 1  # batches in flight at once, as the engine runs them
    sequences_per_s_by_batch_size: dict[int, float]
    sequences_per_s: float  # the best of them: the ceiling
    padding_efficiency: float  # real / padded tokens with the engine's buckets


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    artifact: str
    model_dir: str | None
    source: str
    architecture: str
    num_labels: int
    max_sequence_length: int
    variants: list[str]
    variant_facts: list[VariantFacts] = []


class ConfigSummary(msgspec.Struct, frozen=True, kw_only=True):
    config: str
    label: str
    throughput_at_slo_rps: float | None  # best open-loop rate meeting the SLO with no errors
    peak_rps: float | None  # best achieved, any point
    rps_at_compare_concurrency: float | None
    idle_p50_ms: float | None
    mean_batch_size_at_compare: float | None
    padding_efficiency: float | None  # over the whole single-text sweep
    rerank_peak_pairs_per_s: float | None


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    slo_p99_ms: float
    configs: list[ConfigSummary]
    # Slipstream / baseline ratios, measured in this run.
    ratios: dict[str, float | None]
    # The service issue's targets: measured value, target, whether it was met.
    targets: dict[str, dict[str, Any]]


class BenchReport(msgspec.Struct, kw_only=True):
    started_at: str
    finished_at: str = ""
    duration_s: float = 0.0
    profile: Profile
    environment: environment.Environment
    model: ModelInfo
    workloads: list[WorkloadSummary]
    offline: OfflineCeiling | None = None
    runs: list[ConfigRun] = []
    summary: Summary | None = None
    notes: list[str] = []


def summarize_workload(workload: Workload, lengths: np.ndarray) -> WorkloadSummary:
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99]).tolist()
    return WorkloadSummary(
        name=workload.name,
        fingerprint=workload.fingerprint,
        spec=msgspec.to_builtins(workload.spec),
        requests=len(workload.requests),
        sequences=len(lengths),
        tokens_mean=float(lengths.mean()),
        tokens_p50=p50,
        tokens_p90=p90,
        tokens_p99=p99,
        tokens_max=int(lengths.max()),
        token_histogram=length_histogram(lengths),
    )


def request_set(workload: Workload, lengths: np.ndarray) -> RequestSet:
    """A workload's requests as /classify bodies, with the sequences and real tokens each carries."""
    sequences = workload.sequences_per_request
    bounds = np.concatenate([[0], np.cumsum(sequences)])
    return RequestSet(
        bodies=[msgspec.json.encode({"text": request}) for request in workload.requests],
        sequences=sequences.tolist(),
        tokens=np.add.reduceat(lengths, bounds[:-1]).tolist(),
    )


def _only(requests: RequestSet, index: int) -> RequestSet:
    return RequestSet(
        bodies=[requests.bodies[index]], sequences=[requests.sequences[index]], tokens=[requests.tokens[index]]
    )


def _scrape(port: int) -> server_metrics.Samples:
    response = asyncio.run(fetch("127.0.0.1", port, "GET", "/metrics"))
    return server_metrics.parse(response.body.decode()) if response.status == 200 else {}


def _info(port: int) -> dict[str, Any] | None:
    response = asyncio.run(fetch("127.0.0.1", port, "GET", "/info"))
    return msgspec.json.decode(response.body) if response.status == 200 else None


class LoadClient:
    """A load-generator process for one server: points go in on stdin, results come back on stdout."""

    def __init__(self, plan: LoadPlan, work_dir: Path) -> None:
        self._plan_path = work_dir / "loadgen-plan.msgpack"
        self._plan_path.write_bytes(msgspec.msgpack.encode(plan))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.loadgen", str(self._plan_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(work_dir / "loadgen.log", "ab"),  # noqa: SIM115 (owned by the process)
            preexec_fn=die_with_parent,
        )

    def run(self, point: Point) -> PointResult:
        assert self._process.stdin and self._process.stdout
        self._process.stdin.write(msgspec.json.encode(point) + b"\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited with {self._process.wait()}; see loadgen.log")
        return msgspec.json.decode(line, type=PointResult)

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._plan_path.unlink(missing_ok=True)


class Suite:
    def __init__(
        self,
        profile: Profile,
        artifact: Path,
        model_dir: Path | None,
        output_dir: Path,
        configs: list[str] | None = None,
        progress: bool = True,
    ) -> None:
        self.profile = profile
        self.artifact = artifact
        self.model_dir = model_dir
        self.output_dir = output_dir
        self.manifest = load_manifest(artifact)
        all_configs = server_configs(profile, include_pipeline=model_dir is not None)
        self.configs = [c for c in all_configs if configs is None or c.name in configs]
        self.progress = progress
        self.seed = 0
        self.rerank_requests: list[list[list[str]]] = []

    # -- planning --------------------------------------------------------------

    def _points_for(self, config: ServerConfig) -> int:
        p = self.profile
        n = 0
        if config.single:
            n += len(config.concurrencies or p.concurrencies) + len(config.rate_fractions or p.rate_fractions)
        n += len(config.rerank_concurrencies or p.rerank_concurrencies) if config.rerank else 0
        return n + (1 if config.idle else 0)

    # -- running ---------------------------------------------------------------

    def run(self) -> BenchReport:
        started = time.monotonic()
        env = environment.collect()
        tokenizer = self.artifact / TOKENIZER_FILE
        max_length = self.manifest.max_sequence_length
        single = single_texts(self.profile.single)
        rerank = rerank_requests(self.profile.rerank)
        self.rerank_requests = cast(list[list[list[str]]], rerank.requests)
        single_lengths = token_lengths(single, tokenizer, max_length)
        rerank_lengths = token_lengths(rerank, tokenizer, max_length)
        median = int(np.argsort(single_lengths)[len(single_lengths) // 2])
        single_requests = request_set(single, single_lengths)
        self.requests = {
            "single": single_requests,
            "rerank": request_set(rerank, rerank_lengths),
            # Idle latency uses one median-length text, so engine time is the same every request.
            "idle": _only(single_requests, median),
        }
        report = BenchReport(
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            profile=self.profile,
            environment=env,
            model=ModelInfo(
                artifact=str(self.artifact),
                model_dir=str(self.model_dir) if self.model_dir else None,
                source=self.manifest.source.model,
                architecture=self.manifest.architecture,
                num_labels=self.manifest.num_labels,
                max_sequence_length=max_length,
                variants=sorted(self.manifest.variants),
                variant_facts=variant_facts(self.manifest),
            ),
            workloads=[summarize_workload(single, single_lengths), summarize_workload(rerank, rerank_lengths)],
        )
        report.offline = self._offline(single)
        total = sum(self._points_for(c) for c in self.configs)
        with tqdm(total=total, desc="bench", unit="pt", disable=not self.progress, file=sys.stderr) as bar:
            for config in self.configs:
                bar.set_postfix_str(config.name)
                report.runs.append(self._run_config(config, bar))
        report.summary = summarize(report)
        report.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        report.duration_s = time.monotonic() - started
        return report

    def _offline(self, workload: Workload) -> OfflineCeiling | None:
        """The served engine alone on the same texts in bucketed batches: the ceiling served numbers are held to.

        Reuses the engines' offline benchmark's batching on the engine
        `slipstream serve` would load here (same device, variant, threading and
        padding defaults), at batch 1, 8 and the engine's largest batch, with as
        many batches in flight as the engine runs at once.
        Runs before any server starts, so nothing else competes for the cores.
        """
        import statistics

        try:
            from benchmarks import offline
            from slipstream.engines import load_engine
        except ImportError:  # no engines stage in this checkout
            return None
        p = self.profile
        engine = load_engine(self.artifact, device="auto")
        description = engine.describe()
        texts = workload.texts()[: p.offline_texts]

        def run(batch: dict[str, np.ndarray]) -> object:
            return engine.run(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

        by_batch_size: dict[int, float] = {}
        lengths = np.zeros(0, dtype=np.int64)
        # Batch 1 too: an engine running several batches at once may do best with single items.
        for batch_size in sorted({1, p.offline_batch_size, engine.max_batch_size}):
            batches, lengths = offline.bucketed_batches(
                self.artifact / TOKENIZER_FILE,
                texts,
                engine.buckets,
                self.manifest.input_names,
                batch_size,
                # Padded as the service pads by default on this device (pad_to = "auto").
                pad_to_longest=description.device == "cpu",
            )
            # As many batches in flight as the engine runs at once, as the service feeds it.
            wall_passes = offline.concurrent_passes(run, batches, engine.parallel_runs, p.offline_rounds)
            by_batch_size[batch_size] = len(lengths) / statistics.median(wall_passes)
        return OfflineCeiling(
            variant=description.variant,
            device=description.device,
            providers=description.providers,
            texts=len(texts),
            rounds=p.offline_rounds,
            parallel_runs=engine.parallel_runs,
            sequences_per_s_by_batch_size=by_batch_size,
            sequences_per_s=max(by_batch_size.values()),
            padding_efficiency=padding_efficiency(engine.buckets, lengths),
        )

    def _server(self, config: ServerConfig, port: int) -> Any:
        log = self.output_dir / "logs" / f"{config.name}.log"
        if config.kind == "pipeline":
            assert self.model_dir is not None
            return running_server(
                pipeline_server_command(
                    self.model_dir, port, threads=physical_cores(), max_length=self.manifest.max_sequence_length
                ),
                port,
                log,
                self.profile.ready_timeout_s,
            )
        env = {
            "SLIPSTREAM_HOST": "127.0.0.1",
            "SLIPSTREAM_PORT": str(port),
            "SLIPSTREAM_LOG_LEVEL": "warning",
            **config.env,
        }
        if env.get("SLIPSTREAM_BUCKETS") == "max":
            env["SLIPSTREAM_BUCKETS"] = str(self.manifest.max_sequence_length)
        command = [sys.executable, "-m", "slipstream.cli", "serve", str(self.artifact)]
        return running_server(command, port, log, self.profile.ready_timeout_s, env=env)

    def _run_config(self, config: ServerConfig, bar: tqdm[Any]) -> ConfigRun:
        run = ConfigRun(config=config)
        port = free_port()
        started = time.monotonic()
        try:
            with self._server(config, port):
                run.startup_s = time.monotonic() - started
                run.info = _info(port) if config.kind == "slipstream" else None
                self.seed += 1
                plan = LoadPlan(host="127.0.0.1", port=port, path="/classify", requests=self.requests, seed=self.seed)
                client = LoadClient(plan, self.output_dir / "logs")
                try:
                    self._measure(config, port, client, run, bar)
                finally:
                    client.close()
        except (ServerError, RuntimeError, OSError) as exc:
            run.error = f"{type(exc).__name__}: {exc}"
            tqdm.write(f"{config.name}: {run.error}", file=sys.stderr)
        return run

    def _point(self, config: ServerConfig, port: int, client: LoadClient, run: ConfigRun, point: Point) -> PointResult:
        slipstream = config.kind == "slipstream"
        before = _scrape(port) if slipstream else {}
        result = client.run(point)
        server = server_metrics.difference(before, _scrape(port)) if slipstream else None
        run.points.append(PointRecord(config=config.name, workload=point.workload, result=result, server=server))
        return result

    def _measure(self, config: ServerConfig, port: int, client: LoadClient, run: ConfigRun, bar: tqdm[Any]) -> None:
        p = self.profile
        timing: dict[str, Any] = {"warmup_s": p.warmup_s, "duration_s": p.duration_s}
        if config.idle:
            idle = Point(
                mode="idle", workload="idle", requests=p.idle_requests, label="idle", capture_header="x-inference-time"
            )
            self._point(config, port, client, run, idle)
            bar.update()
        best = 0.0
        for c in (config.concurrencies or p.concurrencies) if config.single else []:
            result = self._point(
                config, port, client, run, Point(mode="closed", concurrency=c, label=f"c={c}", **timing)
            )
            best = max(best, result.achieved_rps)
            bar.update()
        for fraction in (config.rate_fractions or p.rate_fractions) if config.single else []:
            rate = max(best * fraction, 0.5)
            self._point(
                config, port, client, run, Point(mode="open", rate=rate, label=f"{fraction:.0%} of peak", **timing)
            )
            bar.update()
        if config.rerank:
            for c in config.rerank_concurrencies or p.rerank_concurrencies:
                rerank = Point(mode="closed", workload="rerank", concurrency=c, label=f"rerank c={c}", **timing)
                self._point(config, port, client, run, rerank)
                bar.update()
            if config.kind == "slipstream" and self.rerank_requests:
                clients = max(config.rerank_concurrencies or p.rerank_concurrencies)
                run.served_invariance_max_abs_diff, run.served_invariance_pairs = served_invariance(
                    port, self.rerank_requests, clients
                )


# -- summary -------------------------------------------------------------------


def _ok(result: PointResult) -> bool:
    return result.n_ok > 0 and result.n_errors == 0 and result.n_rejected == 0 and result.n_timeouts == 0


def config_summary(run: ConfigRun, profile: Profile) -> ConfigSummary:
    slo = profile.slo_p99_ms / 1000
    single = [r for r in run.points if r.workload == "single"]
    meeting = [
        r.result.achieved_rps
        for r in single
        if r.result.point.mode == "open" and _ok(r.result) and (r.result.latency.p99_s or 1e9) <= slo
    ]
    compare = [r for r in single if r.result.point.concurrency == profile.compare_concurrency]
    idle = [r for r in run.points if r.workload == "idle"]
    rerank = [r.result.sequences_per_s for r in run.points if r.workload == "rerank"]
    real = sum(
        (r.server.padding_efficiency or 0) * (r.server.padded_tokens_per_batch.total) for r in single if r.server
    )
    padded = sum(r.server.padded_tokens_per_batch.total for r in single if r.server)
    return ConfigSummary(
        config=run.config.name,
        label=run.config.label,
        throughput_at_slo_rps=max(meeting) if meeting else (0.0 if single else None),
        peak_rps=max((r.result.achieved_rps for r in single), default=None),
        rps_at_compare_concurrency=compare[0].result.achieved_rps if compare else None,
        idle_p50_ms=idle[0].result.latency.p50_s * 1000 if idle and idle[0].result.latency.p50_s else None,
        mean_batch_size_at_compare=compare[0].server.mean_batch_size if compare and compare[0].server else None,
        padding_efficiency=real / padded if padded else None,
        rerank_peak_pairs_per_s=max(rerank) if rerank else None,
    )


def _rerank_rate(run: ConfigRun, concurrency: int) -> float | None:
    rates = [
        r.result.sequences_per_s
        for r in run.points
        if r.workload == "rerank" and r.result.point.concurrency == concurrency
    ]
    return rates[0] if rates else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def idle_added_latency_ms(run: ConfigRun) -> dict[str, float] | None:
    """End-to-end (client) minus engine time (x-inference-time) per idle request."""
    idle = [r for r in run.points if r.workload == "idle"]
    if not idle or not idle[0].result.captured:
        return None
    result = idle[0].result
    engine_ms = np.array([float(v) for v in result.captured])
    # The client's end-to-end latencies are summarized; with one fixed text the
    # engine time barely varies, so p50(e2e) - p50(engine) is the typical added latency.
    return {
        "end_to_end_p50_ms": (result.latency.p50_s or 0) * 1000,
        "engine_p50_ms": float(np.median(engine_ms)),
        "added_p50_ms": (result.latency.p50_s or 0) * 1000 - float(np.median(engine_ms)),
    }


# The service issue's targets: name in the summary -> (goal, True if higher is better).
TARGET_GOALS: dict[str, tuple[float, bool]] = {
    "served_vs_offline": (0.9, True),
    "served_vs_pipeline": (3.0, True),
    "idle_added_latency_p50_ms": (1.0, False),
}


def target_met(name: str, value: float | None) -> bool:
    goal, higher_is_better = TARGET_GOALS[name]
    return value is not None and (value >= goal if higher_is_better else value <= goal)


def summarize(report: BenchReport) -> Summary:
    profile = report.profile
    by_name = {run.config.name: config_summary(run, profile) for run in report.runs if run.points}
    main = by_name.get("slipstream")
    ratios: dict[str, float | None] = {}
    for baseline in ("pipeline", "slipstream-batch1", "slipstream-no-buckets"):
        other = by_name.get(baseline)
        if main and other:
            ratios[f"at_slo_vs_{baseline}"] = _ratio(main.throughput_at_slo_rps, other.throughput_at_slo_rps)
            ratios[f"c{profile.compare_concurrency}_vs_{baseline}"] = _ratio(
                main.rps_at_compare_concurrency, other.rps_at_compare_concurrency
            )
    fp32 = next((run for run in report.runs if run.config.name == "slipstream-fp32"), None)
    default = next((run for run in report.runs if run.config.name == "slipstream"), None)
    if fp32 and default:
        for c in fp32.config.rerank_concurrencies or []:
            ratios[f"rerank_c{c}_vs_slipstream-fp32"] = _ratio(_rerank_rate(default, c), _rerank_rate(fp32, c))
    targets: dict[str, dict[str, Any]] = {}

    def target(name: str, value: float | None) -> dict[str, Any]:
        return {"value": value, "target": TARGET_GOALS[name][0], "met": target_met(name, value)}

    offline_rate = report.offline.sequences_per_s if report.offline else None
    if main and offline_rate:
        targets["served_vs_offline"] = target(
            "served_vs_offline", _ratio(main.rps_at_compare_concurrency, offline_rate)
        )
    if main and "pipeline" in by_name:
        targets["served_vs_pipeline"] = target(
            "served_vs_pipeline", ratios.get(f"c{profile.compare_concurrency}_vs_pipeline")
        )
    main_run = next((run for run in report.runs if run.config.name == "slipstream"), None)
    added = idle_added_latency_ms(main_run) if main_run else None
    if added:
        targets["idle_added_latency_p50_ms"] = target("idle_added_latency_p50_ms", added["added_p50_ms"]) | added
    return Summary(slo_p99_ms=profile.slo_p99_ms, configs=list(by_name.values()), ratios=ratios, targets=targets)
