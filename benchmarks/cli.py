"""The benchmark suite from the command line: `python -m benchmarks` in a checkout, or
`slipstream bench` where `benchmarks` is importable (imports nothing heavy up front).

benchmarks/ is not installed with Slipstream: it runs from the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from slipstream.defaults import DEFAULT_ARTIFACT_DIR, DEFAULT_MODEL_DIR

RESULTS_ROOT = Path("benchmarks/results")
_HELP = "benchmark the service against baselines; write JSON, Markdown and plots"
_DESCRIPTION = (
    "Run the benchmark suite on this machine: the offline engine, then Slipstream with its defaults, "
    "with batching off and without length buckets, and a transformers pipeline baseline, each "
    "under closed-loop and open-loop (Poisson) load. Results go to "
    "benchmarks/results/<date>-<machine>/ (results.json, results.md, PNG plots)."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`slipstream bench` (slipstream.cli registers it when benchmarks/ is importable)."""
    add_arguments(subparsers.add_parser("bench", help=_HELP, description=_DESCRIPTION))


def build_parser() -> argparse.ArgumentParser:
    """`python -m benchmarks`: the same flags as `slipstream bench`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=_DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifact",
        type=Path,
        default=DEFAULT_ARTIFACT_DIR,
        help=f"export artifact to serve (default: {DEFAULT_ARTIFACT_DIR})",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="Hugging Face model directory for the PyTorch pipeline baseline "
        f"(default: {DEFAULT_MODEL_DIR}; the baseline is skipped if it is missing)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer, shorter points (under 2 minutes)")
    parser.add_argument(
        "--output", type=Path, default=None, help="result directory (default: under benchmarks/results/)"
    )
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated subset of: slipstream, slipstream-batch1, slipstream-no-buckets, pipeline",
    )
    parser.add_argument("--slo-ms", type=float, default=None, help="latency objective for p99 (default 100 ms)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        metavar="RESULT_DIR",
        help="only render the performance page (docs/performance.md) from an existing result directory",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.readme is not None:
        from benchmarks import readme

        print(readme.write(args.readme))
        return 0
    import signal

    import msgspec

    from benchmarks import environment, report
    from benchmarks.settings import FULL, QUICK
    from benchmarks.suite import Suite
    from slipstream.manifest import ManifestError

    profile = QUICK if args.quick else FULL
    if args.slo_ms is not None:
        profile = msgspec.structs.replace(profile, slo_p99_ms=args.slo_ms)
    model_dir = args.model_dir if args.model_dir and (args.model_dir / "config.json").is_file() else None
    if model_dir is None:
        print(f"note: no model directory at {args.model_dir}; skipping the PyTorch pipeline baseline", file=sys.stderr)
    output = args.output
    if output is None:
        machine = environment.collect().machine.name
        suffix = "-quick" if args.quick else ""
        output = RESULTS_ROOT / f"{dt.date.today().isoformat()}-{machine}{suffix}"
    configs = args.configs.split(",") if args.configs else None
    known = {"slipstream", "slipstream-batch1", "slipstream-no-buckets", "pipeline"}
    if configs and not set(configs) <= known:
        print(
            f"error: unknown configuration(s) {sorted(set(configs) - known)}; known: {sorted(known)}", file=sys.stderr
        )
        return 2
    try:
        suite = Suite(profile, args.artifact, model_dir, output, configs=configs, progress=not args.no_progress)
    except ManifestError as exc:
        print(f"error: {exc} (build the default with `make default-artifact` or pass --artifact)", file=sys.stderr)
        return 2
    # SIGTERM (a CI timeout, `timeout`) unwinds like Ctrl-C, so every server is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = suite.run()
    written = report.write(result, output)
    print(f"wrote {', '.join(str(p) for p in written)}")
    failed = [run.config.name for run in result.runs if run.error]
    if failed:
        print(f"error: these configurations failed: {', '.join(failed)} (see {output}/logs/)", file=sys.stderr)
        return 1
    return 0
