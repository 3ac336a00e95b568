"""GPU check of the engines stage, for a machine with an NVIDIA GPU.

    python -m benchmarks.gpu_check --out "$OUT"            # on the GPU machine
    python -m benchmarks.gpu_check --device cpu --quick    # rehearsal on any machine

What it does (docs/engines.md#gpu-verification says why):

1. Model: a MiniLM-L6-sized BERT classifier (6 layers, hidden 384, 12 heads,
   2 labels) built from a transformers config with seeded random weights
   (initializer_range 0.05, so that inputs give clearly different logits) and
   a WordPiece tokenizer trained on the canned export texts; exported with
   `slipstream export`'s API as fp32 + fp16. Or `--artifact DIR` to use a
   carried artifact instead (then `--model-dir` is not needed).
2. Parity on random token batches at every GPU bucket edge (batch 1 and 8,
   random lengths inside the bucket): the CUDA engine against the CPU engine,
   both fp32: max |diff| <= 1e-3; CUDA fp16 against CPU fp32: max |diff| <=
   FP16_MAX_ABS_DIFF and top-1 agreement >= FP16_MIN_TOP1; the same with CUDA
   graphs on.
3. Batch invariance of every engine (and of TensorRT where it loads): each
   row of random batches (1-8 rows, mixed lengths, its position random)
   against the same row run alone, max |co-batched - alone| against the bound
   the export states for the variant on that device in the manifest
   (`variants.<name>.invariance`; reasoned, never measured on a GPU before).
4. TensorRT: tries `device="tensorrt"` (strict) and `device="auto"` and
   records the error / the choice and fallback lines. Where libnvinfer is
   missing, this records the refusal, not TensorRT numbers.
5. Throughput and latency per (batch, bucket) for CUDA fp32, fp16, fp16 with
   CUDA graphs, and PyTorch CUDA eager (fp32 and fp16) on the same shapes.
6. Writes gpu_check.json and gpu_check.md under --out, naming the GPU.

Needs on the machine: onnxruntime-gpu (pip install '.[gpu]'), this
repository, and for building the model: msgspec, tokenizers, transformers
(<4.58), optimum-onnx 0.1.0, optimum, onnx, safetensors, huggingface_hub.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt

from slipstream.json_files import write_json

if TYPE_CHECKING:
    from slipstream.engines.base import Engine

# fp16 logits of a BERT-base-like model differ from fp32 by ~1e-3..1e-2 after
# six layers of half-precision GEMMs and softmax; 3e-2 absolute on logits of
# order 1 still never reorders clearly separated scores.
FP16_MAX_ABS_DIFF = 3e-2
FP16_MIN_TOP1 = 0.99
FP32_MAX_ABS_DIFF = 1e-3

Check = dict[str, object]


def build_model(directory: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from slipstream.export.canned_inputs import TRAINING_TEXT

    directory.mkdir(parents=True, exist_ok=True)
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(
        list(TRAINING_TEXT),
        vocab_size=2000,
        min_frequency=1,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    )
    trainer.save_model(str(directory))
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=2,
        initializer_range=0.05,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def random_batch(rng: np.random.Generator, batch: int, length: int, vocab: int) -> tuple[npt.NDArray[np.int64], ...]:
    ids = rng.integers(1000, vocab, size=(batch, length), dtype=np.int64)
    lengths = rng.integers(max(1, length // 2), length + 1, size=batch)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask, np.zeros_like(ids)


def parity(
    reference: Engine, candidate: Engine, buckets: list[int], max_abs: float, min_top1: float, vocab: int
) -> Check:
    rng = np.random.default_rng(0)
    worst = 0.0
    agree = total = 0
    spread: list[float] = []
    for length in buckets:
        for batch in (1, 8):
            ids, mask, types = random_batch(rng, batch, length, vocab)
            want = reference.run(ids, mask, types)
            got = candidate.run(ids, mask, types)
            worst = max(worst, float(np.abs(want - got).max()))
            agree += int((want.argmax(1) == got.argmax(1)).sum())
            total += batch
            spread.append(float(np.ptp(want[:, 0])) if batch > 1 else 0.0)
    top1 = agree / total
    return {
        "max_abs_diff": worst,
        "top1_agreement": top1,
        "limit_max_abs_diff": max_abs,
        "limit_top1": min_top1,
        "reference_logit_spread": max(spread),
        "passed": worst <= max_abs and top1 >= min_top1,
    }


def invariance(engine: Engine, bound: float | None, buckets: list[int], vocab: int, rounds: int) -> Check:
    """Each row of random batches against the same row run alone; `bound` is the
    manifest's stated max |co-batched - alone| for this variant and device (None: none
    stated, so none promised: the check then asks for bitwise equality)."""
    rng = np.random.default_rng(2)
    worst = 0.0
    rows = 0
    for _ in range(rounds):
        batch = int(rng.integers(1, 9))
        length = int(rng.choice(buckets))
        ids, mask, types = random_batch(rng, batch, length, vocab)
        together = engine.run(ids, mask, types)
        for row in range(batch):
            real = int(mask[row].sum())
            alone = engine.run(ids[row : row + 1, :real], mask[row : row + 1, :real], types[row : row + 1, :real])
            worst = max(worst, float(np.abs(together[row] - alone[0]).max()))
            rows += 1
    return {
        "max_abs_diff": worst,
        "rows": rows,
        "stated_bound": bound,
        "passed": worst <= (0.0 if bound is None else bound),
    }


def time_shape(run: Callable[[], object], iterations: int, synchronize: Callable[[], None] | None = None) -> float:
    run()
    run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        if synchronize:
            synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: rehearse the script")
    parser.add_argument("--artifact", type=Path, default=None, help="a carried artifact (fp32 + fp16)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/slipstream-gpu-check"))
    parser.add_argument("--quick", action="store_true", help="few buckets and iterations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log_lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_lines.append(f"{record.levelname} {record.getMessage()}")

    logging.getLogger("slipstream.engines").addHandler(Collect())

    import onnxruntime as ort

    from slipstream.engines import CudaSettings, EngineSettings, TensorRtSettings, load_engine
    from slipstream.engines.buckets import default_buckets
    from slipstream.engines.platform import probe_platform
    from slipstream.manifest import load_manifest

    platform = probe_platform()
    report: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gpu": platform.gpu_name,
        "gpu_problem": platform.gpu_problem,
        "onnxruntime": ort.__version__,
        "providers": list(platform.available_providers),
        "tensorrt_version": platform.tensorrt_version,
        "tensorrt_problem": platform.tensorrt_problem,
    }
    print(msgspec.json.encode(report).decode())
    if args.artifact is None:
        from slipstream.export.api import export_model

        model_dir = build_model(args.work_dir / "model")
        artifact = args.work_dir / "artifact"
        started = time.perf_counter()
        export_model(str(model_dir), artifact, variants=["fp32", "fp16"], force=True, progress=print)
        report["export_s"] = time.perf_counter() - started
    else:
        artifact, model_dir = args.artifact, None
    buckets = default_buckets("cuda", 512)
    if args.quick:
        buckets = [16, 64, 512]
    max_batch = 32
    device = args.device
    base = EngineSettings(
        buckets=buckets, max_batch_size=max_batch, tensorrt=TensorRtSettings(cache_dir=str(args.work_dir / "trt-cache"))
    )
    cpu_fp32 = load_engine(artifact, device="cpu", variant="fp32", settings=base)
    engines = {
        f"{device}-fp32": load_engine(artifact, device=device, variant="fp32", settings=base),
        f"{device}-fp16": load_engine(artifact, device=device, variant="fp16", settings=base),
    }
    if device == "cuda":
        graphs = msgspec.structs.replace(base, cuda=CudaSettings(cuda_graphs=True))
        try:
            engines["cuda-fp16-graphs"] = load_engine(artifact, device="cuda", variant="fp16", settings=graphs)
        except Exception as exc:  # recorded, not fatal: graphs are opt-in
            report["cuda_graphs_error"] = str(exc)
    report["descriptions"] = {name: msgspec.to_builtins(e.describe()) for name, e in engines.items()}
    vocab = 2000
    checks: dict[str, Check] = {}
    for name, engine in engines.items():
        fp32 = name.endswith("fp32")
        try:
            engine.warmup([(b, length) for length in buckets for b in (1, 8)])
            checks[name] = parity(
                cpu_fp32,
                engine,
                buckets,
                FP32_MAX_ABS_DIFF if fp32 else FP16_MAX_ABS_DIFF,
                1.0 if fp32 else FP16_MIN_TOP1,
                vocab,
            )
        except Exception as exc:
            checks[name] = {"passed": False, "error": str(exc)}
        print(name, checks[name])
    report["parity"] = checks
    manifest = load_manifest(artifact)
    rounds = 8 if args.quick else 40
    invariance_checks: dict[str, Check] = {}

    def check_invariance(name: str, engine: Engine) -> None:
        described = engine.describe()
        stated = manifest.variant(described.variant).invariance_on(described.device)
        try:
            invariance_checks[name] = invariance(
                engine, None if stated is None else stated.max_abs_diff, buckets, vocab, rounds
            )
        except Exception as exc:
            invariance_checks[name] = {"passed": False, "error": str(exc)}
        print(name, "invariance", invariance_checks[name])

    for name, engine in engines.items():
        if checks[name].get("error") is None:
            check_invariance(name, engine)
    for choice in ("tensorrt", "auto"):
        try:
            chosen = load_engine(artifact, device=choice, settings=base)
            report[f"device_{choice}"] = f"loaded on {chosen.describe().device}"
            if choice == "tensorrt":
                check_invariance(f"tensorrt-{chosen.describe().variant}", chosen)
        except Exception as exc:
            report[f"device_{choice}"] = f"refused: {exc}"
        print(choice, report[f"device_{choice}"])
    report["invariance"] = invariance_checks
    report["engine_log"] = log_lines

    # Throughput per (batch, bucket); PyTorch CUDA eager on the same shapes.
    iterations = 5 if args.quick else 30
    batch_sizes = [1, 8, 32]
    runners: dict[str, Callable[[int, int], Callable[[], object]]] = {}
    rng = np.random.default_rng(1)

    def pytorch_runner(model: Any) -> Callable[[int, int], Callable[[], object]]:
        import torch

        def make(batch: int, length: int) -> Callable[[], object]:
            ids, mask, types = (torch.from_numpy(a).cuda() for a in random_batch(rng, batch, length, vocab))

            def run() -> object:
                with torch.inference_mode():
                    return model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.float().cpu()

            return run

        return make

    def engine_runner(engine: Engine) -> Callable[[int, int], Callable[[], object]]:
        def make(batch: int, length: int) -> Callable[[], object]:
            ids, mask, types = random_batch(rng, batch, length, vocab)
            return lambda: engine.run(ids, mask, types)

        return make

    for name, engine in engines.items():
        if checks.get(name, {}).get("error") is None:
            runners[name] = engine_runner(engine)
    synchronize: Callable[[], None] | None = None
    if device == "cuda" and model_dir is not None:
        import torch
        from transformers import AutoModelForSequenceClassification

        synchronize = torch.cuda.synchronize
        for dtype_name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, torch_dtype=dtype).cuda().eval()

            runners[f"pytorch-cuda-{dtype_name}-eager"] = pytorch_runner(model)
    throughput = []
    for length in buckets:
        for batch in batch_sizes:
            for name, make in runners.items():
                latency = time_shape(make(batch, length), iterations, synchronize)
                throughput.append(
                    {
                        "runner": name,
                        "batch": batch,
                        "bucket": length,
                        "median_latency_ms": latency * 1e3,
                        "sequences_per_s": batch / latency,
                    }
                )
    report["throughput"] = throughput
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gpu_check.json", report)
    (args.out / "gpu_check.md").write_text(render(report, list(runners)))
    print((args.out / "gpu_check.md").read_text())
    passed = [*checks.values(), *invariance_checks.values()]
    return 0 if all(c.get("passed") for c in passed) else 1


def render(report: dict[str, Any], runners: list[str]) -> str:
    lines = [
        f"# Engines GPU check ({report['created_at']})",
        "",
        f"GPU: {report['gpu'] or report['gpu_problem']}; onnxruntime {report['onnxruntime']}; "
        f"TensorRT: {report['tensorrt_version'] or report['tensorrt_problem']}.",
        "",
        f"device=tensorrt: {report['device_tensorrt']}",
        "",
        f"device=auto: {report['device_auto']}",
        "",
        "| parity vs CPU fp32 | max abs diff | top-1 | limit | passed |",
        "|---|---:|---:|---:|---|",
    ]
    for name, check in report["parity"].items():
        if "error" in check:
            lines.append(f"| {name} | error: {check['error']} | | | no |")
        else:
            lines.append(
                f"| {name} | {check['max_abs_diff']:.2e} | {check['top1_agreement']:.3f} | "
                f"{check['limit_max_abs_diff']:.0e} | {'yes' if check['passed'] else 'NO'} |"
            )
    lines += [
        "",
        "| batch invariance | max abs(co-batched - alone) | rows | stated bound (manifest) | within |",
        "|---|---:|---:|---:|---|",
    ]
    for name, check in report["invariance"].items():
        if "error" in check:
            lines.append(f"| {name} | error: {check['error']} | | | no |")
        else:
            bound = "none stated (0 asked)" if check["stated_bound"] is None else f"{check['stated_bound']:.1e}"
            lines.append(
                f"| {name} | {check['max_abs_diff']:.2e} | {check['rows']} | {bound} | "
                f"{'yes' if check['passed'] else 'NO'} |"
            )
    lines += [
        "",
        "Median latency ms / sequences per s:",
        "",
        "| batch | bucket | " + " | ".join(runners) + " |",
        "|---:|---:|" + "---:|" * len(runners),
    ]
    rows: dict[tuple[int, int], dict[str, str]] = {}
    for t in report["throughput"]:
        rows.setdefault((t["bucket"], t["batch"]), {})[t["runner"]] = (
            f"{t['median_latency_ms']:.2f} / {t['sequences_per_s']:.0f}"
        )
    for (bucket, batch), cells in sorted(rows.items()):
        lines.append(f"| {batch} | {bucket} | " + " | ".join(cells.get(r, "-") for r in runners) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
