"""Distillation: the student is a one-output reranker, deterministic, and agrees with its teacher."""

from __future__ import annotations

import msgspec
import pytest

from slipstream.default_model.build import (
    WEIGHTS_FILE,
    ensure_default_model,
    read_record,
    recipe_key,
)
from slipstream.default_model.recipe import CLASSIC_DOCUMENTS, CLASSIC_QUERY
from tests.default_model import quiet


def test_distilled_model_is_a_one_output_regression_reranker_with_its_tokenizer(tiny_default_model):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny_default_model)
    assert model.config.num_labels == 1
    assert model.config.problem_type == "regression"
    assert model.config.id2label == {0: "relevance"}
    tokenizer = AutoTokenizer.from_pretrained(tiny_default_model)
    batch = tokenizer([CLASSIC_QUERY] * 3, list(CLASSIC_DOCUMENTS), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (3, 1)
    # Different pairs get clearly different scores.
    assert float(logits.max() - logits.min()) > 1e-3


def test_distillation_json_records_the_recipe_the_weights_and_the_agreement(tiny_default_model, tiny_recipe):
    from slipstream.manifest import sha256_of

    record = read_record(tiny_default_model)
    assert record is not None
    assert record.recipe_key == recipe_key(tiny_recipe)
    assert record.weights_sha256 == sha256_of(tiny_default_model / WEIGHTS_FILE)
    report = record.report
    assert report.recipe == tiny_recipe
    assert report.n_train_queries == tiny_recipe.steps * tiny_recipe.queries_per_step
    assert report.n_eval_queries == tiny_recipe.eval_queries
    assert report.n_eval_pairs == tiny_recipe.eval_queries * tiny_recipe.candidates_per_query
    assert -1.0 <= report.spearman_pooled <= 1.0
    assert -1.0 <= report.spearman_per_query_mean <= 1.0
    assert 0.0 <= report.top1_agreement <= 1.0
    assert report.classic_example.query == CLASSIC_QUERY
    assert len(report.classic_example.student_logits) == len(CLASSIC_DOCUMENTS)
    assert {"teacher", "training", "evaluation", "total"} <= set(report.seconds)


def test_the_same_recipe_gives_bit_identical_weights_and_another_seed_does_not(
    tmp_path, tiny_default_model, tiny_recipe
):
    again = tmp_path / "again"
    ensure_default_model(again, tiny_recipe, progress=False, log=quiet)
    assert (again / WEIGHTS_FILE).read_bytes() == (tiny_default_model / WEIGHTS_FILE).read_bytes()
    first, second = read_record(tiny_default_model), read_record(again)
    assert first is not None and second is not None
    assert first.report.spearman_pooled == second.report.spearman_pooled

    reseeded = tmp_path / "reseeded"
    ensure_default_model(reseeded, msgspec.structs.replace(tiny_recipe, seed=8), progress=False, log=quiet)
    assert (reseeded / WEIGHTS_FILE).read_bytes() != (tiny_default_model / WEIGHTS_FILE).read_bytes()


def test_length_sorted_scoring_returns_each_pairs_score_in_the_given_order(tiny_default_model):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from slipstream.default_model.distill import score_pairs

    model = BertForSequenceClassification.from_pretrained(tiny_default_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_default_model)
    pairs = [(CLASSIC_QUERY, d) for d in CLASSIC_DOCUMENTS] + [
        ("Space?", "Big."),
        ("a b c d e f g", "h i j k l m n o p"),
    ]
    batch = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits[:, 0].numpy()
    scores = score_pairs(model, tokenizer, pairs, batch_size=2)
    assert scores == pytest.approx(expected, abs=1e-5)


# --- the real thing ----------------------------------------------------------------
