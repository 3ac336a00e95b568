"""`slipstream export MODEL OUTPUT_DIR`. Nothing heavy is imported until it runs."""

from __future__ import annotations

import argparse
import sys
import time

from slipstream.export.architectures import SUPPORTED_ARCHITECTURES

EXIT_OK = 0
EXIT_ERROR = 1
# The artifact was written, but a variant that was asked for failed validation.
EXIT_VARIANT_REJECTED = 3
EXIT_INTERRUPTED = 130

_DESCRIPTION = """\
Export a Hugging Face *ForSequenceClassification model (a classifier or a
cross-encoder reranker) to a validated ONNX artifact that `slipstream serve`
loads: manifest.json, tokenizer.json and one model.<variant>.onnx per variant.

Every variant is checked against the PyTorch model on canned inputs, for batch
invariance (alone against co-batched), and a reduced-precision one against fp32
on real text (fidelity bars); a variant that fails is not written (with
--keep-unfaithful, one that only misses the fidelity bars is written as
opt-in). Supported model types: {types}.
"""

_EPILOG = """\
examples:
  slipstream export ./my-finetuned-bert artifacts/my-bert
  slipstream export cross-encoder/ms-marco-MiniLM-L6-v2 artifacts/reranker --variants fp32,int8,fp16
  slipstream export ./bert-base artifacts/bert --num-labels 2   # base model: new random head

exit status: 0 written; 1 error (nothing written); 3 written, but a requested
variant failed validation and was left out; 130 interrupted (nothing written).
"""


def variant_list(text: str) -> list[str]:
    """`--variants`' type (here and in `slipstream build-default`): comma-separated names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one variant, e.g. fp32,int8")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a Hugging Face classifier/reranker to a validated ONNX artifact",
        description=_DESCRIPTION.format(types=", ".join(SUPPORTED_ARCHITECTURES)),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="Hugging Face hub id, or a directory saved with save_pretrained")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="artifact directory to create")
    parser.add_argument(
        "--variants",
        type=variant_list,
        default=None,
        metavar="LIST",
        help="comma-separated from fp32, int8 (CPU), fp16 (GPU); fp32 is always included. "
        "Default: fp32,fp16 when ONNX Runtime sees a CUDA GPU here, else fp32,int8",
    )
    parser.add_argument("--force", action="store_true", help="replace OUTPUT_DIR if it exists")
    parser.add_argument(
        "--num-labels",
        type=_positive,
        default=None,
        metavar="N",
        help="for a checkpoint without a trained classification head: add a new, "
        "randomly initialised head with N labels (useful for benchmarks only)",
    )
    parser.add_argument(
        "--max-length",
        type=_positive,
        default=None,
        metavar="TOKENS",
        help="cap the longest input the artifact declares (default: what the model accepts)",
    )
    parser.add_argument(
        "--chunk-window",
        type=_positive,
        default=None,
        metavar="TOKENS",
        help="record the window this model ranks long inputs best with: what `long_text: chunk` uses unless "
        "the server's --chunk-window says otherwise (default: the whole max length)",
    )
    parser.add_argument(
        "--keep-unfaithful",
        action="store_true",
        help="also write a reduced-precision variant that misses the fidelity bars against fp32, as an "
        "opt-in variant (served only when asked for by name; its measured loss is in the manifest)",
    )
    parser.add_argument(
        "--fidelity-queries",
        type=_positive,
        default=None,
        metavar="N",
        help="queries in the real-text fidelity set (20 passages each; default 100, what the bars are set on)",
    )
    parser.add_argument("--opset", type=_positive, default=None, help="ONNX opset (default: optimum's choice)")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the result")
    parser.add_argument("--debug", action="store_true", help="show library warnings and tracebacks")
    parser.set_defaults(func=run_export)


def _silence_libraries() -> None:
    """Exporters and quantizers log many warnings that are noise to a user
    (tracer warnings, 'consider pre-processing'); keep the output to our progress."""
    import logging
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)


def run_export(args: argparse.Namespace) -> int:
    started = time.perf_counter()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    if not args.debug:
        _silence_libraries()
    from slipstream.export.api import export_artifact
    from slipstream.export.errors import ExportError
    from slipstream.export.fidelity import FidelitySettings

    try:
        outcome = export_artifact(
            args.model,
            args.output_dir,
            variants=args.variants,
            force=args.force,
            num_labels=args.num_labels,
            opset=args.opset,
            max_length=args.max_length,
            chunk_window=args.chunk_window,
            fidelity=None if args.fidelity_queries is None else FidelitySettings(queries=args.fidelity_queries),
            keep_unfaithful=args.keep_unfaithful,
            progress=progress,
        )
    except ExportError as exc:
        print(f"slipstream export: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("slipstream export: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an exporter failure we did not anticipate
        if args.debug:
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"slipstream export: error: export failed ({type(exc).__name__}: {detail}); rerun with --debug for details",
            file=sys.stderr,
        )
        return EXIT_ERROR
    manifest = outcome.manifest
    print(
        f"wrote {outcome.output_dir} ({manifest.architecture}, {manifest.num_labels} labels, "
        f"variants: {', '.join(manifest.variants)}) in {outcome.seconds:.1f}s"
    )
    for name, reason in outcome.rejected.items():
        print(f"slipstream export: variant {name} failed validation and was not written: {reason}", file=sys.stderr)
    return EXIT_VARIANT_REJECTED if outcome.rejected else EXIT_OK
