"""Compare each ONNX variant with the PyTorch model on canned inputs.

The inputs cover batch 1 and larger batches (so padding is exercised), single
texts and (query, passage) pairs, and inputs at the longest length validated
(the model's maximum, capped at VALIDATION_MAX_LENGTH to keep export fast).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import numpy.typing as npt

from slipstream.export import canned_inputs
from slipstream.manifest import Validation

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedModel, PreTrainedTokenizerFast

VALIDATION_MAX_LENGTH = 512

Batch = dict[str, npt.NDArray[np.int64]]


class Tolerance(msgspec.Struct, frozen=True, kw_only=True):
    """The acceptance rule for one variant; `describe()` goes into the manifest."""

    max_abs_diff: float | None = None
    min_top1_agreement: float | None = None
    min_rank_correlation: float | None = None

    def accepts(self, max_abs_diff: float, top1: float, rank: float | None) -> bool:
        if self.max_abs_diff is not None and not max_abs_diff <= self.max_abs_diff:
            return False
        if self.min_top1_agreement is not None and top1 < self.min_top1_agreement:
            return False
        if self.min_rank_correlation is not None and rank is not None:
            return rank >= self.min_rank_correlation
        return True

    def describe(self) -> str:
        rules = []
        if self.max_abs_diff is not None:
            rules.append(f"max |logit diff| <= {self.max_abs_diff:g}")
        if self.min_top1_agreement is not None:
            rules.append(f"top-1 agreement >= {self.min_top1_agreement:g}")
        if self.min_rank_correlation is not None:
            rules.append(f"Spearman rank correlation >= {self.min_rank_correlation:g}")
        return " and ".join(rules)


# fp32 must match PyTorch to rounding error. int8 and fp16 change the numbers by
# design; what a classifier/reranker user needs is the same decisions (top-1)
# and the same ordering of scores (rank correlation over all inputs and labels).
# These bounds catch a broken variant (wrong kernels, saturated integer sums,
# overflow: top-1 near chance, rank correlation far below 0.9); they are not a
# quality guarantee, so the measured values are recorded in the manifest. They
# must also accept a good int8 model whose logits barely vary (an untrained head
# on real weights, where int8 noise alone moves ranks of near-ties; see
# docs/design-notes.md#int8-validation-tolerances). fp16 is far closer to fp32
# than int8.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_diff=1e-4),
    "int8": Tolerance(min_top1_agreement=0.85, min_rank_correlation=0.9),
    "fp16": Tolerance(min_top1_agreement=0.95, min_rank_correlation=0.99),
}


@dataclass(frozen=True)
class ValidationSet:
    batches: list[Batch]
    reference_logits: list[npt.NDArray[np.float32]]

    @property
    def n_inputs(self) -> int:
        return sum(len(logits) for logits in self.reference_logits)


def build_batches(tokenizer: PreTrainedTokenizerFast, *, input_names: list[str], max_length: int) -> list[Batch]:
    """Tokenize the canned inputs with transformers' tokenizer into int64 batches."""
    length = min(max_length, VALIDATION_MAX_LENGTH)
    long_text = " ".join([canned_inputs.LONG_PASSAGE] * 8)
    # Every query against every passage: relevant and irrelevant pairs, as a reranker sees them.
    pairs = [(query, passage) for query in canned_inputs.QUERIES for passage in canned_inputs.PASSAGES]
    raw_batches: list[tuple[list[str], list[str] | None]] = [
        ([canned_inputs.SINGLES[2]], None),  # batch 1, a few tokens
        ([canned_inputs.SINGLES[0]], None),
        (list(canned_inputs.SINGLES), None),  # batch 12, padded
        ([q for q, _ in pairs], [p for _, p in pairs]),  # batch 36 pairs
        ([canned_inputs.QUERIES[0], canned_inputs.QUERIES[3]], [long_text, long_text]),  # longest
        ([long_text], None),
    ]
    batches: list[Batch] = []
    for first, second in raw_batches:
        encoded = tokenizer(
            first,
            second,
            padding=True,
            truncation="only_second" if second is not None else True,
            max_length=length,
            return_tensors="np",
            return_token_type_ids=True,
        )
        batches.append({name: np.asarray(encoded[name], dtype=np.int64) for name in input_names})
    return batches


def reference_logits(model: PreTrainedModel, batches: list[Batch]) -> list[npt.NDArray[np.float32]]:
    import torch

    outputs = []
    with torch.inference_mode():
        for batch in batches:
            tensors = {name: torch.from_numpy(values) for name, values in batch.items()}
            outputs.append(model(**tensors).logits.float().numpy())
    return outputs


def build_validation_set(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    *,
    input_names: list[str],
    max_length: int,
) -> ValidationSet:
    batches = build_batches(tokenizer, input_names=input_names, max_length=max_length)
    return ValidationSet(batches=batches, reference_logits=reference_logits(model, batches))


def spearman(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float:
    """Spearman rank correlation; ties are ranked by position (stable sort), so it repeats exactly."""
    rank_a = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rank_b = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def compare(
    reference: list[npt.NDArray[np.float32]],
    candidate: list[npt.NDArray[np.float32]],
    tolerance: Tolerance,
) -> Validation:
    ref = np.concatenate(reference)
    got = np.concatenate(candidate)
    if ref.shape != got.shape:
        return Validation(
            passed=False,
            n_inputs=len(ref),
            max_abs_diff=float("inf"),
            top1_agreement=0.0,
            rank_correlation=None,
            criteria=f"{tolerance.describe()}; output shape {got.shape} != {ref.shape}",
        )
    finite = bool(np.isfinite(got).all())
    max_abs_diff = float(np.abs(ref - got).max()) if finite else float("inf")
    top1 = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
    # Fewer than three distinct reference scores: too little spread to rank.
    rankable = finite and np.unique(ref).size >= 3
    rank = spearman(ref.ravel(), got.ravel()) if rankable else None
    return Validation(
        passed=finite and tolerance.accepts(max_abs_diff, top1, rank),
        n_inputs=len(ref),
        max_abs_diff=max_abs_diff,
        top1_agreement=top1,
        rank_correlation=rank,
        criteria=tolerance.describe(),
    )


def onnx_logits(model_path: Path, batches: list[Batch], *, providers: list[str]) -> list[npt.NDArray[np.float32]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=providers)
    output_name = session.get_outputs()[0].name
    return [np.asarray(session.run([output_name], batch)[0], dtype=np.float32) for batch in batches]


def validate_variant(
    variant: str,
    model_path: Path,
    validation_set: ValidationSet,
    *,
    providers: list[str],
) -> Validation:
    tolerance = TOLERANCES[variant]
    try:
        candidate = onnx_logits(model_path, validation_set.batches, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Validation(
            passed=False,
            n_inputs=validation_set.n_inputs,
            max_abs_diff=float("inf"),
            top1_agreement=0.0,
            rank_correlation=None,
            criteria=f"{tolerance.describe()}; ONNX Runtime failed: {message}",
        )
    return compare(validation_set.reference_logits, candidate, tolerance)
