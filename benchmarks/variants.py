"""Every variant of an artifact served side by side: rerank throughput, fidelity and invariance.

``python -m benchmarks.variants [--artifact A] [--rounds 3] [--concurrencies 1,8]`` serves
each variant in turn (``slipstream serve --variant V``, every other setting default; the
variant the engine picks on this CPU by itself with no ``--variant`` at all, as a user gets
it; ``/info`` must name the variant expected) and measures, per round and in the same order
every round:

* rerank pairs/s, closed loop, at each concurrency (the suite's rerank workload);
* served invariance: the pairs of a few rerank requests scored while the other
  clients keep the server busy, against the same pairs sent one per request
  afterwards: max |co-batched - alone| over them.

Next to that it prints each variant's fidelity to fp32 and its recorded
guarantee from the manifest. Ratios against fp32 are per round, then the median.
Results go to benchmarks/results/<date>-<machine>-variants/ (variants.json, variants.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
from pathlib import Path
from typing import cast

import msgspec

from benchmarks import environment
from benchmarks.http_client import fetch
from benchmarks.invariance import served_invariance
from benchmarks.loadgen import LoadPlan, Point
from benchmarks.servers import free_port, running_server
from benchmarks.settings import FULL
from benchmarks.suite import LoadClient, request_set
from benchmarks.workloads import rerank_requests, token_lengths
from slipstream.defaults import DEFAULT_ARTIFACT_DIR
from slipstream.manifest import TOKENIZER_FILE, Fidelity, Invariance, load_manifest


class VariantRound(msgspec.Struct, frozen=True, kw_only=True):
    variant: str
    round: int
    pairs_per_s: dict[int, float]  # by concurrency
    served_invariance_max_abs_diff: float
    invariance_pairs: int


class VariantSummary(msgspec.Struct, frozen=True, kw_only=True):
    variant: str
    execution: str
    default_on_cpu: bool  # what `slipstream serve` picks on a CPU
    fidelity: Fidelity | None
    invariance: list[Invariance]
    pairs_per_s: dict[int, float]  # medians over rounds
    speed_vs_fp32: dict[int, float]  # median of per-round ratios
    served_invariance_max_abs_diff: float  # worst over rounds


class VariantsReport(msgspec.Struct, kw_only=True):
    started_at: str
    artifact: str
    environment: environment.Environment
    cpu: str
    rounds: int
    duration_s: float
    warmup_s: float
    concurrencies: list[int]
    results: list[VariantRound] = []
    summary: list[VariantSummary] = []


def run(
    artifact: Path, rounds: int, concurrencies: list[int], duration_s: float, warmup_s: float, logs: Path
) -> VariantsReport:
    from slipstream.engines.platform import cpu_flags, cpu_model_name
    from slipstream.engines.selection import choose_variant

    manifest = load_manifest(artifact)
    workload = rerank_requests(FULL.rerank)
    lengths = token_lengths(workload, artifact / TOKENIZER_FILE, manifest.max_sequence_length)
    requests = {"rerank": request_set(workload, lengths)}
    flags = cpu_flags()
    shown = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2") if f in flags]
    report = VariantsReport(
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        artifact=str(artifact),
        environment=environment.collect(),
        cpu=f"{cpu_model_name()} ({', '.join(shown)})",
        rounds=rounds,
        duration_s=duration_s,
        warmup_s=warmup_s,
        concurrencies=concurrencies,
    )
    variants = ["fp32", *sorted(name for name in manifest.variants if name != "fp32")]
    default_cpu = choose_variant(manifest, "cpu", None, flags)
    for round_index in range(rounds):
        for variant in variants:
            port = free_port()
            env = {"SLIPSTREAM_HOST": "127.0.0.1", "SLIPSTREAM_PORT": str(port), "SLIPSTREAM_LOG_LEVEL": "warning"}
            # The default variant is served as a user gets it: no --variant, every setting default.
            chosen = [] if variant == default_cpu else ["--variant", variant]
            command = [sys.executable, "-m", "slipstream.cli", "serve", str(artifact), *chosen]
            log = logs / f"{variant}.log"
            with running_server(command, port, log, 600.0, env=env):
                served = _served_variant(port)
                if served != variant:
                    asked = " ".join(chosen) or "no --variant"
                    raise RuntimeError(f"expected {variant} ({asked}); /info says it serves {served}")
                plan = LoadPlan(host="127.0.0.1", port=port, path="/classify", requests=requests, seed=round_index)
                client = LoadClient(plan, log.parent)
                try:
                    rates = {}
                    for c in concurrencies:
                        point = Point(
                            mode="closed",
                            workload="rerank",
                            concurrency=c,
                            warmup_s=warmup_s,
                            duration_s=duration_s,
                            label=f"rerank c={c}",
                        )
                        rates[c] = client.run(point).sequences_per_s
                finally:
                    client.close()
                worst, n = served_invariance(port, cast(list[list[list[str]]], workload.requests), max(concurrencies))
            report.results.append(
                VariantRound(
                    variant=variant,
                    round=round_index,
                    pairs_per_s=rates,
                    served_invariance_max_abs_diff=worst,
                    invariance_pairs=n,
                )
            )
            print(f"round {round_index + 1} {variant}: {rates} pairs/s, served invariance {worst:.3g}", file=sys.stderr)
    for variant in variants:
        mine = [r for r in report.results if r.variant == variant]
        ratios = {
            c: statistics.median(
                r.pairs_per_s[c] / base.pairs_per_s[c]
                for r, base in zip(mine, [r for r in report.results if r.variant == "fp32"], strict=True)
            )
            for c in concurrencies
        }
        record = manifest.variants[variant]
        report.summary.append(
            VariantSummary(
                variant=variant,
                execution="per_item" if record.runs_per_item else "batched",
                default_on_cpu=variant == default_cpu,
                fidelity=record.fidelity,
                invariance=record.invariance,
                pairs_per_s={c: statistics.median(r.pairs_per_s[c] for r in mine) for c in concurrencies},
                speed_vs_fp32=ratios,
                served_invariance_max_abs_diff=max(r.served_invariance_max_abs_diff for r in mine),
            )
        )
    return report


def _served_variant(port: int) -> str:
    response = asyncio.run(fetch("127.0.0.1", port, "GET", "/info"))
    groups: dict[str, dict[str, object]] = msgspec.json.decode(response.body)["groups"]
    return str(next(iter(groups.values()))["variant"])


def _default_text(summary: VariantSummary) -> str:
    if summary.default_on_cpu:
        return "yes"
    fidelity = summary.fidelity
    return "opt-in (misses the fidelity bars)" if fidelity is not None and not fidelity.meets_bars else "no"


def markdown(report: VariantsReport) -> str:
    cs = report.concurrencies
    head = " | ".join(f"pairs/s c={c} | vs fp32 c={c}" for c in cs)
    lines = [
        f"# Variants served side by side ({report.started_at[:10]})",
        "",
        f"CPU: {report.cpu}. Artifact `{report.artifact}`. {report.rounds} rounds, each variant in turn, "
        f"{report.warmup_s:g} s warm-up + {report.duration_s:g} s per point; medians of per-round values.",
        "",
        f"| variant | default on CPU | execution | top-1 vs fp32 | Spearman vs fp32 | {head} | "
        "served max abs(co-batched - alone) | recorded guarantee (CPU) |",
        "|---|---|---|---|---|" + "---|---|" * len(cs) + "---|---|",
    ]
    for s in report.summary:
        fidelity = s.fidelity
        top1 = "reference" if fidelity is None else f"{fidelity.top1_agreement:.3f}"
        rho = (
            "reference"
            if fidelity is None or fidelity.spearman_per_query is None
            else f"{fidelity.spearman_per_query:.4f}"
        )
        speeds = " | ".join(f"{s.pairs_per_s[c]:.1f} | {s.speed_vs_fp32[c]:.2f}x" for c in cs)
        cpu = next((i for i in s.invariance if "cpu" in i.devices), None)
        guarantee = "-" if cpu is None else f"{cpu.guarantee} (measured {cpu.measured_max_abs_diff})"
        lines.append(
            f"| {s.variant} | {_default_text(s)} | {s.execution} | {top1} | {rho} | {speeds} | "
            f"{s.served_invariance_max_abs_diff:.3g} | {guarantee} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.variants", description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrencies", default="1,8")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrencies.split(",")]
    output: Path = args.output or Path("benchmarks/results") / (
        f"{dt.date.today().isoformat()}-{environment.collect().machine.name}-variants"
    )
    output.mkdir(parents=True, exist_ok=True)
    report = run(args.artifact, args.rounds, concurrencies, args.duration, args.warmup, output / "logs")
    (output / "variants.json").write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    (output / "variants.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
