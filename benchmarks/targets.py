"""The service targets, measured in several rounds: `python -m benchmarks.targets`.

On a shared machine throughput drifts by 10-15% from one minute to the next,
so a single benchmark run can land anywhere in that band, and a ratio of two
numbers taken minutes apart carries both drifts. This re-measures only what
the service targets need, `--rounds` times, each round in the full suite's
order and with its settings: the offline engine ceiling first, then Slipstream
(idle latency, 32 clients), then the transformers pipeline (32 clients). It
prints every round and the median of each ratio, and writes them as JSON and
Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from benchmarks import environment
from benchmarks.readme import TARGET_TEXT
from benchmarks.settings import FULL
from benchmarks.suite import TARGET_GOALS, Suite, target_met
from slipstream.defaults import DEFAULT_ARTIFACT_DIR, DEFAULT_MODEL_DIR
from slipstream.json_files import write_json


class Round(msgspec.Struct, frozen=True, kw_only=True):
    offline_sequences_per_s: float | None
    served_rps_at_32: float | None
    pipeline_rps_at_32: float | None
    targets: dict[str, float | None]


class TargetsReport(msgspec.Struct, frozen=True, kw_only=True):
    started_at: str
    machine: str
    artifact: str
    rounds: list[Round]
    median: dict[str, float | None]


def measure_round(artifact: Path, model_dir: Path | None, work_dir: Path) -> Round:
    # The full profile's timing, reduced to the points the targets read.
    profile = msgspec.structs.replace(FULL, concurrencies=[32], rate_fractions=[], rerank_concurrencies=[])
    suite = Suite(profile, artifact, model_dir, work_dir, configs=["slipstream", "pipeline"], progress=False)
    suite.configs = [
        msgspec.structs.replace(config, concurrencies=None, rate_fractions=None, rerank=False)
        for config in suite.configs
    ]
    report = suite.run()
    failed = [run.config.name for run in report.runs if run.error]
    if failed:
        raise RuntimeError(f"configurations failed: {failed} (logs in {work_dir / 'logs'})")
    if report.summary is None:
        raise RuntimeError("the suite produced no summary")
    by_name = {summary.config: summary for summary in report.summary.configs}
    served, pipeline = by_name.get("slipstream"), by_name.get("pipeline")
    return Round(
        offline_sequences_per_s=report.offline.sequences_per_s if report.offline else None,
        served_rps_at_32=served.rps_at_compare_concurrency if served else None,
        pipeline_rps_at_32=pipeline.rps_at_compare_concurrency if pipeline else None,
        targets={name: report.summary.targets.get(name, {}).get("value") for name in TARGET_GOALS},
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def render(report: TargetsReport) -> str:
    def number(value: float | None, digits: int = 2) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        f"# Service targets, {len(report.rounds)} rounds: {report.started_at}, {report.machine}",
        "",
        "Each round: the offline engine ceiling, then Slipstream (idle, 32 clients), then the transformers "
        "pipeline (32 clients), with the full benchmark profile's timing. "
        "Command: `python -m benchmarks.targets`.",
        "",
        "| round | offline seq/s | Slipstream req/s at 32 | pipeline req/s at 32 | served / offline "
        "| served / pipeline | idle added ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(report.rounds, 1):
        t = r.targets
        lines.append(
            f"| {index} | {number(r.offline_sequences_per_s, 1)} | {number(r.served_rps_at_32, 1)} "
            f"| {number(r.pipeline_rps_at_32, 1)} | {number(t['served_vs_offline'])} "
            f"| {number(t['served_vs_pipeline'])} | {number(t['idle_added_latency_p50_ms'])} |"
        )
    lines += ["", "| target | median | goal | met |", "|---|---|---|---|"]
    for name, (goal, _) in TARGET_GOALS.items():
        value = report.median[name]
        what = TARGET_TEXT[name].format(c=FULL.compare_concurrency)
        lines.append(f"| {what} | {number(value)} | {goal:g} | {'yes' if target_met(name, value) else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR)
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="model directory for the pipeline baseline (skipped if missing)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="result directory (default: benchmarks/results/<date>-<machine>-targets)",
    )
    args = parser.parse_args(argv)
    machine = environment.collect().machine.name
    output = args.output or Path("benchmarks/results") / f"{dt.date.today().isoformat()}-{machine}-targets"
    model_dir = args.model_dir if (args.model_dir / "config.json").is_file() else None
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    rounds = []
    for index in range(args.rounds):
        # Under logs/, which git ignores: each round leaves only server and load-generator logs.
        rounds.append(measure_round(args.artifact, model_dir, output / "logs" / f"round-{index + 1}"))
        print(f"round {index + 1}: {rounds[-1].targets}", file=sys.stderr, flush=True)
    report = TargetsReport(
        started_at=started,
        machine=machine,
        artifact=str(args.artifact),
        rounds=rounds,
        median={name: _median([r.targets[name] for r in rounds]) for name in TARGET_GOALS},
    )
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "targets.json", report)
    text = render(report)
    (output / "targets.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
