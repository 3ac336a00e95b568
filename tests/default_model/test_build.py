"""The default reranker's build: corpus, distillation mechanics, determinism, caching, export.

The mechanics run on a tiny BERT teacher (the export fixtures' random model)
with a few steps, so they take seconds; the real recipe on all-MiniLM-L6-v2 is
exercised by the slow test at the end.
"""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from slipstream.default_model import build as default_model
from slipstream.default_model.build import (
    BUILT_FROM_FILE,
    DISTILLATION_FILE,
    WEIGHTS_FILE,
    build_default,
    ensure_default_model,
    read_record,
    recipe_key,
)
from slipstream.default_model.corpus import CorpusSettings, build_passages, draw_query
from slipstream.default_model.recipe import CLASSIC_DOCUMENTS, CLASSIC_QUERY, DistillRecipe
from slipstream.manifest import load_manifest


def _quiet(message: str) -> None:
    del message


@pytest.fixture(scope="session")
def tiny_recipe(tiny_model_factory) -> DistillRecipe:
    return DistillRecipe(
        seed=7,
        steps=3,
        queries_per_step=2,
        candidates_per_query=4,
        hard_negatives=1,
        hard_negative_pool=5,
        train_passages=40,
        eval_queries=6,
        threads=1,
        teacher_dir=str(tiny_model_factory("bert", 3)),
    )


@pytest.fixture(scope="session")
def tiny_default_model(tmp_path_factory, tiny_recipe) -> Path:
    model_dir = tmp_path_factory.mktemp("default") / "model"
    ensure_default_model(model_dir, tiny_recipe, progress=False, log=_quiet)
    return model_dir


# --- corpus -----------------------------------------------------------------


@pytest.fixture(scope="module")
def passages():
    return build_passages(CorpusSettings())


def test_corpus_is_distinct_prose_from_the_standard_library_within_the_length_limits(passages):
    settings = CorpusSettings()
    assert len(passages) > 2000
    assert len({p.text for p in passages}) == len(passages)
    assert len({p.document for p in passages}) > 500
    for passage in passages:
        words = passage.text.split(" ")
        assert settings.min_passage_words <= len(words) <= settings.max_passage_words
        assert ">>>" not in passage.text and "::=" not in passage.text


def test_corpus_is_the_same_on_every_build(passages):
    assert build_passages(CorpusSettings()) == passages


def test_sentence_queries_come_from_their_passage_and_their_positive_leaves_the_sentence_out(passages):
    settings = CorpusSettings(key_phrase_share=0.0)
    rng = random.Random(0)
    queries = [q for i, p in enumerate(passages[:400]) if (q := draw_query(p, i, rng, settings))]
    assert len(queries) > 100
    split_from_rest = 0
    for query in queries:
        source = passages[query.passage_index]
        assert query.text in source.text
        assert settings.min_query_words <= len(query.text.split(" ")) <= settings.max_query_words
        if query.positive != source.text:
            split_from_rest += 1
            assert query.text not in query.positive
    assert split_from_rest > len(queries) // 5


def test_key_phrase_queries_are_a_few_words_of_their_passage(passages):
    settings = CorpusSettings(key_phrase_share=1.0)
    rng = random.Random(0)
    queries = [q for i, p in enumerate(passages[:200]) if (q := draw_query(p, i, rng, settings))]
    short = [q for q in queries if len(q.text.split(" ")) <= 6]
    assert len(short) > len(queries) // 2
    for query in short:
        assert all(word in passages[query.passage_index].text for word in query.text.split(" "))


# --- distillation mechanics --------------------------------------------------


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
    ensure_default_model(again, tiny_recipe, progress=False, log=_quiet)
    assert (again / WEIGHTS_FILE).read_bytes() == (tiny_default_model / WEIGHTS_FILE).read_bytes()
    first, second = read_record(tiny_default_model), read_record(again)
    assert first is not None and second is not None
    assert first.report.spearman_pooled == second.report.spearman_pooled

    reseeded = tmp_path / "reseeded"
    ensure_default_model(reseeded, msgspec.structs.replace(tiny_recipe, seed=8), progress=False, log=_quiet)
    assert (reseeded / WEIGHTS_FILE).read_bytes() != (tiny_default_model / WEIGHTS_FILE).read_bytes()


# --- caching -------------------------------------------------------------------


def test_a_second_build_with_the_same_recipe_reuses_the_model(tiny_default_model, tiny_recipe, monkeypatch):
    import slipstream.default_model.distill as distill_module

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been reused")

    monkeypatch.setattr(distill_module, "distill", no_training)
    messages: list[str] = []
    record, built = ensure_default_model(tiny_default_model, tiny_recipe, progress=False, log=messages.append)
    assert not built
    assert record == read_record(tiny_default_model)
    assert "up to date" in messages[0]


def test_the_cache_key_changes_with_every_recipe_setting(tiny_recipe):
    keys = {
        recipe_key(tiny_recipe),
        recipe_key(msgspec.structs.replace(tiny_recipe, steps=4)),
        recipe_key(msgspec.structs.replace(tiny_recipe, learning_rate=2e-4)),
        recipe_key(msgspec.structs.replace(tiny_recipe, corpus=CorpusSettings(max_passage_words=30))),
        recipe_key(msgspec.structs.replace(tiny_recipe, teacher_dir=None)),
    }
    assert len(keys) == 5
    assert recipe_key(tiny_recipe) == recipe_key(msgspec.structs.replace(tiny_recipe))


def test_edited_weights_or_a_new_recipe_rebuild_the_model(tmp_path, tiny_default_model, tiny_recipe):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_default_model, copy)
    with open(copy / WEIGHTS_FILE, "ab") as weights:
        weights.write(b"\0")
    _, built = ensure_default_model(copy, tiny_recipe, progress=False, log=_quiet)
    assert built
    assert (copy / WEIGHTS_FILE).read_bytes() == (tiny_default_model / WEIGHTS_FILE).read_bytes()

    _, built = ensure_default_model(copy, msgspec.structs.replace(tiny_recipe, steps=2), progress=False, log=_quiet)
    assert built
    assert not list(tmp_path.glob(".model.*")), "no staging or retired directories are left behind"


# --- build-default: model + export ----------------------------------------------


def test_build_default_exports_once_and_then_finds_the_artifact_up_to_date(tmp_path, tiny_default_model, tiny_recipe):
    artifact = tmp_path / "artifact"
    first = build_default(tiny_default_model, artifact, tiny_recipe, variants=["fp32"], progress=False, log=_quiet)
    assert not first.model_built and first.artifact_exported
    manifest = load_manifest(artifact)
    assert manifest.num_labels == 1 and manifest.labels == ["relevance"]
    assert manifest.problem_type == "regression" and manifest.activation == "none"
    assert (artifact / BUILT_FROM_FILE).is_file()

    messages: list[str] = []
    second = build_default(tiny_default_model, artifact, tiny_recipe, variants=["fp32"], progress=False, log=messages.append)
    assert not second.artifact_exported
    assert any("already holds an export of this model" in m for m in messages)

    # An artifact whose model file was changed is exported again.
    onnx = artifact / manifest.variants["fp32"].file
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    third = build_default(tiny_default_model, artifact, tiny_recipe, variants=["fp32"], progress=False, log=_quiet)
    assert third.artifact_exported
    assert load_manifest(artifact).variants["fp32"].size_bytes == manifest.variants["fp32"].size_bytes


def test_build_default_command_reports_the_cached_model_and_artifact(
    tmp_path, tiny_default_model, tiny_recipe, monkeypatch, capsys
):
    from slipstream.cli import main

    monkeypatch.setattr(default_model, "DEFAULT_RECIPE", tiny_recipe)
    artifact = tmp_path / "artifact"
    argv = ["build-default", "--model-dir", str(tiny_default_model), "--artifact-dir", str(artifact),
            "--variants", "fp32", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "cached" in out and "exported now" in out and "Spearman" in out
    assert main(argv) == 0
    assert "already up to date" in capsys.readouterr().out


def test_build_default_command_is_registered_with_the_makefile_flags():
    from slipstream.cli import build_parser

    args = build_parser().parse_args(
        ["build-default", "--model-dir", "models/default-reranker", "--artifact-dir", "artifacts/default-reranker"]
    )
    assert args.model_dir == Path("models/default-reranker")
    assert args.artifact_dir == Path("artifacts/default-reranker")
    assert callable(args.func)


# --- the real thing ----------------------------------------------------------------


@pytest.mark.slow
def test_short_real_distillation_ranks_the_puppy_first_and_agrees_with_the_teacher(tmp_path):
    """A shortened real recipe on all-MiniLM-L6-v2: the full one is `make default-artifact`."""
    recipe = DistillRecipe(steps=60, train_passages=400, eval_queries=40)
    record, built = ensure_default_model(tmp_path / "model", recipe, progress=False, log=_quiet)
    assert built
    report = record.report
    assert report.classic_example.passed, report.classic_example
    assert report.spearman_pooled > 0.6, report


def test_length_sorted_scoring_returns_each_pairs_score_in_the_given_order(tiny_default_model):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from slipstream.default_model.distill import score_pairs

    model = BertForSequenceClassification.from_pretrained(tiny_default_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_default_model)
    pairs = [(CLASSIC_QUERY, d) for d in CLASSIC_DOCUMENTS] + [("Space?", "Big."), ("a b c d e f g", "h i j k l m n o p")]
    batch = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits[:, 0].numpy()
    scores = score_pairs(model, tokenizer, pairs, batch_size=2)
    assert scores == pytest.approx(expected, abs=1e-5)
