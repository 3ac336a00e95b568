"""Caching and export: a build is reused while its recipe and weights match, and exported once."""

from __future__ import annotations

import msgspec

from slipstream.default_model.build import (
    BUILT_FROM_FILE,
    DEFAULT_CHUNK_WINDOW,
    WEIGHTS_FILE,
    build_default,
    ensure_default_model,
    read_record,
    recipe_key,
)
from slipstream.export.corpus import CorpusSettings
from slipstream.manifest import load_manifest
from tests.default_model import quiet


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
    _, built = ensure_default_model(copy, tiny_recipe, progress=False, log=quiet)
    assert built
    assert (copy / WEIGHTS_FILE).read_bytes() == (tiny_default_model / WEIGHTS_FILE).read_bytes()

    _, built = ensure_default_model(copy, msgspec.structs.replace(tiny_recipe, steps=2), progress=False, log=quiet)
    assert built
    assert not list(tmp_path.glob(".model.*")), "no staging or retired directories are left behind"


# --- build-default: model + export ----------------------------------------------


def test_build_default_exports_once_and_then_finds_the_artifact_up_to_date(tmp_path, tiny_default_model, tiny_recipe):
    artifact = tmp_path / "artifact"
    first = build_default(tiny_default_model, artifact, tiny_recipe, variants=["fp32"], progress=False, log=quiet)
    assert not first.model_built and first.artifact_exported
    manifest = load_manifest(artifact)
    assert manifest.num_labels == 1 and manifest.labels == ["relevance"]
    assert manifest.problem_type == "regression" and manifest.activation == "none"
    assert manifest.chunk_window == DEFAULT_CHUNK_WINDOW  # what `long_text: chunk` uses when served
    assert (artifact / BUILT_FROM_FILE).is_file()

    messages: list[str] = []
    second = build_default(
        tiny_default_model, artifact, tiny_recipe, variants=["fp32"], progress=False, log=messages.append
    )
    assert not second.artifact_exported
    assert any("already holds an export of this model" in m for m in messages)

    # An artifact whose model file was changed is exported again.
    onnx = artifact / manifest.variants["fp32"].file
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    third = build_default(tiny_default_model, artifact, tiny_recipe, variants=["fp32"], progress=False, log=quiet)
    assert third.artifact_exported
    assert load_manifest(artifact).variants["fp32"].size_bytes == manifest.variants["fp32"].size_bytes
