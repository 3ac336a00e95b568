"""The tiny recipe and the model it builds, shared by the default model's tests (session-scoped)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipstream.default_model.build import ensure_default_model
from slipstream.default_model.recipe import DistillRecipe
from tests.default_model import quiet


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
    ensure_default_model(model_dir, tiny_recipe, progress=False, log=quiet)
    return model_dir
