"""Compare an artifact's variants with PyTorch eager on real English text.

For the engines/benchmarks stages to check the export choices on this machine:

    python -m slipstream.export.speed MODEL_DIR ARTIFACT_DIR [--batch-size 8] [--rounds 5]

MODEL_DIR is what the artifact was exported from (PyTorch runs it in fp32 eager
mode). Inputs are the canned English texts and (query, passage) pairs, sorted by
length, cut into batches and padded to power-of-two buckets, the way a
length-bucketed batcher pads them. Timings are interleaved (every runner once
per round) and the median round is reported, so machine noise hits all runners
alike; speedups are ratios within this one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import numpy as np

from slipstream.export import canned_inputs
from slipstream.manifest import load_manifest

Batch = dict[str, np.ndarray]


class SpeedResult(msgspec.Struct, frozen=True, kw_only=True):
    runner: str  # "pytorch" or a variant name
    median_seconds: float  # one pass over all batches
    speedup_vs_pytorch: float


def bucketed_batches(
    tokenizer_file: Path, input_names: Sequence[str], *, batch_size: int, max_length: int
) -> list[Batch]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length)
    inputs: list[str | tuple[str, str]] = list(canned_inputs.SINGLES) + list(canned_inputs.PASSAGES)
    inputs += list(zip(canned_inputs.QUERIES, canned_inputs.PASSAGES, strict=True))
    inputs += [(query, canned_inputs.LONG_PASSAGE) for query in canned_inputs.QUERIES[:4]]
    encodings = sorted(tokenizer.encode_batch(inputs), key=lambda encoding: len(encoding.ids))
    batches = []
    for start in range(0, len(encodings) - batch_size + 1, batch_size):
        chunk = encodings[start : start + batch_size]
        longest = max(len(encoding.ids) for encoding in chunk)
        bucket = min(max_length, 1 << max(4, (longest - 1).bit_length()))
        arrays = {name: np.zeros((len(chunk), bucket), dtype=np.int64) for name in input_names}
        for row, encoding in enumerate(chunk):
            n = len(encoding.ids)
            arrays["input_ids"][row, :n] = encoding.ids
            arrays["attention_mask"][row, :n] = 1
            if "token_type_ids" in arrays:
                arrays["token_type_ids"][row, :n] = encoding.type_ids
        batches.append(arrays)
    return batches


def _median_pass(runners: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    for run in runners.values():  # warm-up
        run()
    timings: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}


def compare_speed(
    model_dir: Path,
    artifact_dir: Path,
    *,
    variants: Sequence[str] | None = None,
    extra_models: dict[str, Path] | None = None,
    batch_size: int = 8,
    rounds: int = 5,
    threads: int | None = None,
) -> list[SpeedResult]:
    """Time PyTorch eager fp32 and each ONNX variant on the same bucketed batches.

    `extra_models` adds other ONNX files (name -> path) to the comparison, to try
    alternative optimization or quantization settings side by side."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    manifest = load_manifest(artifact_dir)
    batches = bucketed_batches(
        artifact_dir / manifest.tokenizer.file,
        manifest.input_names,
        batch_size=batch_size,
        max_length=manifest.max_sequence_length,
    )
    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    torch_batches = [{name: torch.from_numpy(array) for name, array in batch.items()} for batch in batches]

    def run_pytorch() -> None:
        with torch.inference_mode():
            for batch in torch_batches:
                model(**batch)

    runners: dict[str, Callable[[], None]] = {"pytorch": run_pytorch}
    files = {name: artifact_dir / manifest.variant(name).file for name in (variants or manifest.variants)}
    files.update(extra_models or {})
    for name, path in files.items():
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_onnx(session: ort.InferenceSession = session) -> None:
            for batch in batches:
                session.run(None, batch)

        runners[name] = run_onnx
    medians = _median_pass(runners, rounds)
    baseline = medians["pytorch"]
    return [
        SpeedResult(runner=name, median_seconds=seconds, speedup_vs_pytorch=baseline / seconds)
        for name, seconds in medians.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("artifact_dir", type=Path)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=PATH.onnx")
    args = parser.parse_args(argv)
    extra = {item.split("=", 1)[0]: Path(item.split("=", 1)[1]) for item in args.extra}
    results = compare_speed(
        args.model_dir,
        args.artifact_dir,
        extra_models=extra,
        batch_size=args.batch_size,
        rounds=args.rounds,
        threads=args.threads,
    )
    for result in results:
        print(
            f"{result.runner:>24}  {result.median_seconds * 1000:9.1f} ms/pass  "
            f"x{result.speedup_vs_pytorch:.2f} vs PyTorch eager fp32"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
