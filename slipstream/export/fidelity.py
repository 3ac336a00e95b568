"""Fidelity to fp32 and batch invariance, measured on real text at export.

The fidelity set is generated offline and deterministically from the Python
documentation (`slipstream.export.corpus`): queries drawn from passages, each
with candidates (its own passage, passages of the same document, others).
Rerankers (one logit) are judged per query: does the variant pick the same
best passage as fp32, and how well do its scores rank the candidates
(Spearman)? Classifiers are judged on the arg-max label of every candidate
alone and of every (query, candidate) pair.

Every variant runs as engines will run it (`slipstream.engines.per_item` for
per-item variants), so the figures are the served ones. Invariance compares
each item's logits alone (batch of one, unpadded) with the same item
co-batched: random batch-mates, random position, extra padding, and a session
with every core.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from slipstream.engines.per_item import run_each_item_alone
from slipstream.export.corpus import CorpusSettings, Passage, build_passages, draw_query
from slipstream.export.validation import spearman
from slipstream.manifest import Execution, Fidelity, Invariance

if TYPE_CHECKING:
    from pathlib import Path

    from tokenizers import Tokenizer

Feeds = dict[str, npt.NDArray[np.int64]]
Logits = npt.NDArray[np.float32]
Task = Literal["rerank", "classification"]

# The bars a reduced-precision variant must meet against fp32 to be served unasked.
RERANK_MIN_TOP1 = 0.98
RERANK_MIN_SPEARMAN = 0.99
CLASSIFICATION_MIN_TOP1 = 0.99
# Batch invariance on a CPU: bitwise where the kernels allow it, never more than this.
CPU_INVARIANCE_BOUND = 1e-6
# Served inputs are rarely this long; the cap keeps export fast on 8k-token models.
FIDELITY_MAX_LENGTH = 512


class FidelitySettings(msgspec.Struct, frozen=True, kw_only=True):
    """The size and make-up of the fidelity set. The defaults are the bars' set
    (100 queries x 20 passages); tests lower `queries` to keep tiny exports fast."""

    queries: int = 100
    passages_per_query: int = 20
    same_document_passages: int = 5  # hard candidates: passages next to the positive in its document
    seed: int = 20261203
    # Longer passages than the default model's training text: closer to what rerank clients send.
    corpus: CorpusSettings = CorpusSettings(max_passage_words=64)
    invariance_items: int = 48  # items checked alone against co-batched
    invariance_batch_size: int = 8


@dataclass(frozen=True)
class RerankQuery:
    query: str
    passages: list[str]  # the positive first, then the other candidates


@functools.cache
def _passages(corpus: CorpusSettings) -> list[Passage]:
    return build_passages(corpus)


def rerank_queries(settings: FidelitySettings, *, seed_offset: int = 0) -> list[RerankQuery]:
    """Deterministic queries with their candidates; `seed_offset` draws a disjoint-looking
    sample (calibration text is drawn with another offset than the fidelity set)."""
    passages = _passages(settings.corpus)
    rng = random.Random(settings.seed + seed_offset)
    order = list(range(len(passages)))
    rng.shuffle(order)
    queries: list[RerankQuery] = []
    for index in order:
        drawn = draw_query(passages[index], index, rng, settings.corpus)
        if drawn is None:
            continue
        document = passages[index].document
        nearby = range(max(0, index - 30), min(len(passages), index + 30))
        same_document = [i for i in nearby if i != index and passages[i].document == document]
        rng.shuffle(same_document)
        candidates = [drawn.positive]
        candidates += [passages[i].text for i in same_document[: settings.same_document_passages]]
        while len(candidates) < settings.passages_per_query:
            other = passages[rng.randrange(len(passages))].text
            if other not in candidates and other != passages[index].text:
                candidates.append(other)
        queries.append(RerankQuery(query=drawn.text, passages=candidates))
        if len(queries) == settings.queries:
            break
    return queries


@dataclass(frozen=True)
class EncodedItem:
    input_ids: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64]


@dataclass(frozen=True)
class FidelitySet:
    task: Task
    items: list[EncodedItem]  # unpadded, in query order
    n_queries: int
    passages_per_query: int


def task_of(num_labels: int) -> Task:
    """A one-logit model is a reranker (or a regressor, judged the same way)."""
    return "rerank" if num_labels == 1 else "classification"


def encode(tokenizer: Tokenizer, inputs: Sequence[str | tuple[str, str]], max_length: int) -> list[EncodedItem]:
    """As the service encodes them (`slipstream.batching.tokenization.TextEncoder`): special
    tokens, the query kept whole, truncated to max_length; a pair whose query alone is too
    long for that is cut `longest_first`."""
    from tokenizers import Tokenizer as RustTokenizer

    def truncating(strategy: str) -> Tokenizer:
        copy = RustTokenizer.from_str(tokenizer.to_str())
        copy.no_padding()
        copy.enable_truncation(min(max_length, FIDELITY_MAX_LENGTH), strategy=strategy)
        return copy

    pairs = bool(inputs) and isinstance(inputs[0], tuple)
    primary = truncating("only_second" if pairs else "longest_first")
    try:
        encodings = primary.encode_batch(list(inputs))
    except Exception:  # `only_second` refuses a pair whose first text leaves no room for the second
        fallback = truncating("longest_first")
        encodings = []
        for item in inputs:
            try:
                encodings.append(primary.encode(*item) if isinstance(item, tuple) else primary.encode(item))
            except Exception:
                encodings.append(fallback.encode(*item) if isinstance(item, tuple) else fallback.encode(item))
    return [EncodedItem(np.asarray(e.ids, dtype=np.int64), np.asarray(e.type_ids, dtype=np.int64)) for e in encodings]


def build_fidelity_set(
    tokenizer: Tokenizer, *, num_labels: int, max_length: int, settings: FidelitySettings
) -> FidelitySet:
    queries = rerank_queries(settings)
    pairs = [(q.query, passage) for q in queries for passage in q.passages]
    task = task_of(num_labels)
    items = encode(tokenizer, pairs, max_length)
    if task == "classification":
        items += encode(tokenizer, [passage for q in queries for passage in q.passages], max_length)
    return FidelitySet(task=task, items=items, n_queries=len(queries), passages_per_query=settings.passages_per_query)


def calibration_items(tokenizer: Tokenizer, *, max_length: int, settings: FidelitySettings) -> list[EncodedItem]:
    """Real pairs for calibrating quantization, drawn apart from the fidelity set."""
    calibration = msgspec.structs.replace(settings, queries=max(8, settings.queries // 4), passages_per_query=8)
    queries = rerank_queries(calibration, seed_offset=1)
    return encode(tokenizer, [(q.query, p) for q in queries for p in q.passages], max_length)


# -- running as engines run -------------------------------------------------


def pad(items: Sequence[EncodedItem], input_names: Sequence[str], *, extra: int = 0) -> Feeds:
    """Right-padded batch (pad id 0 is never read: the mask is 0 there)."""
    width = max(len(item.input_ids) for item in items) + extra
    ids = np.zeros((len(items), width), dtype=np.int64)
    types = np.zeros_like(ids)
    lengths = np.array([len(item.input_ids) for item in items])
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    for row, item in enumerate(items):
        ids[row, : len(item.input_ids)] = item.input_ids
        types[row, : len(item.token_type_ids)] = item.token_type_ids
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: feeds[name] for name in input_names}


RunFeeds = Callable[[Feeds], Logits]


def served(run: RunFeeds, execution: Execution) -> RunFeeds:
    """`run` as an engine applies it: per-item variants run each row alone, unpadded."""
    if execution == "per_item":
        return functools.partial(run_each_item_alone, run)
    return run


def run_all(run: RunFeeds, items: Sequence[EncodedItem], input_names: Sequence[str], *, batch_size: int = 16) -> Logits:
    """Logits of every item, in length-sorted batches as the batcher forms them."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    out: list[Logits] = [np.empty(0, np.float32)] * len(items)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        logits = run(pad([items[i] for i in chunk], input_names))
        for row, index in enumerate(chunk):
            out[index] = logits[row]
    return np.stack(out).astype(np.float32)


def session_runner(
    model_path: Path, *, threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> RunFeeds:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_path), options, providers=list(providers))
    output_name = session.get_outputs()[0].name

    def run(feeds: Feeds) -> Logits:
        return np.asarray(session.run([output_name], feeds)[0], dtype=np.float32)

    return run


# -- figures ----------------------------------------------------------------


def fidelity_criteria(task: Task) -> str:
    if task == "rerank":
        return f"per query: same best passage >= {RERANK_MIN_TOP1:g}, mean Spearman >= {RERANK_MIN_SPEARMAN:g}"
    return f"same arg-max label >= {CLASSIFICATION_MIN_TOP1:g}"


def measure_fidelity(fidelity_set: FidelitySet, reference: Logits, candidate: Logits) -> Fidelity:
    """How `candidate` (one variant's logits) agrees with the fp32 logits `reference`."""
    finite = bool(np.isfinite(candidate).all())
    max_abs_diff = float(np.abs(reference - candidate).max()) if finite else float("inf")
    n_pairs = fidelity_set.n_queries * fidelity_set.passages_per_query
    spearman_mean: float | None = None
    if fidelity_set.task == "rerank":
        ref = reference[:n_pairs, 0].reshape(fidelity_set.n_queries, -1)
        got = candidate[:n_pairs, 0].reshape(fidelity_set.n_queries, -1)
        top1 = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
        spearman_mean = float(np.mean([spearman(r, g) for r, g in zip(ref, got, strict=True)]))
        meets = top1 >= RERANK_MIN_TOP1 and spearman_mean >= RERANK_MIN_SPEARMAN
    else:
        top1 = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
        meets = top1 >= CLASSIFICATION_MIN_TOP1
    return Fidelity(
        task=fidelity_set.task,
        n_queries=fidelity_set.n_queries if fidelity_set.task == "rerank" else 0,
        n_inputs=len(reference),
        top1_agreement=top1,
        spearman_per_query=spearman_mean,
        max_abs_diff=max_abs_diff,
        meets_bars=finite and meets,
        criteria=fidelity_criteria(fidelity_set.task),
    )


def describe_fidelity(fidelity: Fidelity) -> str:
    spearman_text = "" if fidelity.spearman_per_query is None else f", Spearman {fidelity.spearman_per_query:.4f}"
    return (
        f"top-1 {fidelity.top1_agreement:.3f}{spearman_text}, max |diff| {fidelity.max_abs_diff:.3g} "
        f"over {fidelity.n_inputs} inputs ({fidelity.criteria})"
    )


def co_batched_max_diff(
    runs: Sequence[RunFeeds],
    items: Sequence[EncodedItem],
    input_names: Sequence[str],
    *,
    batch_size: int,
    seed: int,
) -> tuple[float, int]:
    """max |logits co-batched - logits alone| over `items`, through each of `runs`
    (e.g. one thread and every core): alone is a batch of one, unpadded; co-batched
    puts each item among random others, at a random position, with extra padding."""
    rng = random.Random(seed)
    alone = np.stack([runs[0](pad([item], input_names))[0] for item in items])
    worst = 0.0
    for run in runs:
        order = list(range(len(items)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            logits = run(pad([items[i] for i in chunk], input_names, extra=rng.randint(0, 24)))
            worst = max(worst, float(np.abs(logits - alone[chunk]).max()))
    return worst, len(items)


def cpu_invariance(measured: float, n_inputs: int, execution: Execution, where: str) -> Invariance:
    """The CPU guarantee a measurement supports: bitwise, or the 1e-6 bound (a larger
    difference is a failure the caller reports)."""
    how = (
        "each item runs alone, unpadded (per-item execution)"
        if execution == "per_item"
        else "row-independent kernels: batch-mates, position, padding and threads do not enter an item's sums"
    )
    bitwise = measured == 0.0
    return Invariance(
        devices=["cpu"],
        guarantee="bitwise" if bitwise else "tolerance",
        max_abs_diff=0.0 if bitwise else CPU_INVARIANCE_BOUND,
        measured_max_abs_diff=measured,
        n_inputs=n_inputs,
        basis=f"{how}; measured at export on {where}",
    )


def gpu_invariance(variant: str, fp16_max_abs_diff: float | None) -> Invariance | None:
    """What is stated for GPUs, where export measured nothing: cuBLAS and TensorRT pick
    kernels (and so summation orders) by shape, so a co-batched item is not bitwise its
    alone result. Both results lie within the variant's error of the exact value, so
    they differ by at most twice it (fp32: its 1e-4 acceptance against PyTorch; fp16:
    its measured difference from fp32)."""
    if variant == "fp32":
        bound, devices = 2e-4, ["cuda"]
        basis = "reasoned: twice fp32's 1e-4 acceptance against PyTorch (TF32 off); not measured on a GPU"
    elif variant == "fp16" and fp16_max_abs_diff is not None:
        bound, devices = 2 * fp16_max_abs_diff, ["cuda", "tensorrt"]
        basis = (
            "reasoned: twice fp16's largest difference from fp32 on the fidelity set (measured "
            "where export ran); not measured on a GPU"
        )
    else:
        return None
    return Invariance(
        devices=devices, guarantee="tolerance", max_abs_diff=bound, measured_max_abs_diff=None, n_inputs=0, basis=basis
    )
