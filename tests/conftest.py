"""Shared fixtures for the whole suite. Nothing here reaches the network.

Session-scoped, cached per argument tuple (build once, reuse everywhere):

``tiny_model_factory(model_type="bert", num_labels=3, problem_type=None) -> Path``
    A `save_pretrained` directory holding a tiny random
    `*ForSequenceClassification` model (2 layers, hidden size 32,
    `initializer_range=0.2` so that different inputs give clearly different
    logits) and a fast tokenizer trained locally in the architecture's real
    family. It accepts inputs up to 512 tokens. `model_type` is any of
    `tests.export.tiny_models.ARCHITECTURES` (bert, distilbert, roberta,
    xlm-roberta, deberta-v2, electra, albert, mpnet, modernbert). Treat the
    directory as read-only.

``tiny_artifact_factory(model_type="bert", num_labels=3, variants=("fp32",), problem_type=None) -> Path``
    `slipstream export` of the model above: an artifact directory
    (manifest.json, tokenizer.json, model.<variant>.onnx). Read-only. Its
    fidelity set is `TINY_FIDELITY` (10 queries, not the bars' 100: the same
    checks at a tenth of the export time; tests/export/test_fidelity.py
    exports once with the full set).

``tiny_artifact -> Path``
    BERT, 3 labels, variants fp32 and int8.

``default_reranker_build -> DefaultBuild`` (use only in tests marked ``@pytest.mark.slow``)
    The default reranker exactly as `make serve` builds it (`slipstream
    build-default`: the full recipe distilled from the real all-MiniLM-L6-v2
    weights, exported fp32 + int8), in this checkout's `models/` and
    `artifacts/`: built there when missing or stale, as `make serve` would, and
    reused otherwise (the build's own cache check), so `make test` and
    `make serve` build it once between them.

``default_reranker_artifact -> Path`` (slow)
    Its artifact directory.
"""

from __future__ import annotations

import os

# No test may reach the Hugging Face hub; set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under `make test`'s two workers, torch's OpenMP threads that spin while they wait for each other are
# starved by the other worker: the default reranker's training ran 4.3x slower beside one busy core,
# 2.2x with passive waiting (docs/design-notes.md#make-test-on-two-workers). Set before torch loads;
# the weights are bitwise the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from slipstream.defaults import DEFAULT_ARTIFACT_DIR, DEFAULT_MODEL_DIR
from slipstream.export.fidelity import FidelitySettings

if TYPE_CHECKING:
    from slipstream.default_model.build import DefaultBuild

REPO = Path(__file__).resolve().parents[1]

TinyModelFactory = Callable[..., Path]
TinyArtifactFactory = Callable[..., Path]


# The one file of tests that use the real default reranker (its build takes minutes).
DEFAULT_RERANKER_TESTS = "tests/default_model/test_real_model.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The default reranker's tests first, so that under `make test` its build overlaps the rest of the suite."""
    items.sort(key=lambda item: not item.nodeid.startswith(DEFAULT_RERANKER_TESTS))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test` runs two workers (pytest -n 2): each file's tests on one worker, so that they share its
    module fixtures (servers, exports), and all of tests/ray_serve/ on one, so that they share one cluster."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/ray_serve/" if path.startswith("tests/ray_serve/") else path

    return SharedFixtureScheduling(config, log)


# What the tiny exports measure fidelity and batch invariance on (see the docstring).
TINY_FIDELITY = FidelitySettings(queries=10)


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory: pytest.TempPathFactory) -> TinyModelFactory:
    from tests.export.tiny_models import build_tiny_model

    cache: dict[tuple[str, int, str | None], Path] = {}

    def factory(model_type: str = "bert", num_labels: int = 3, problem_type: str | None = None) -> Path:
        key = (model_type, num_labels, problem_type)
        if key not in cache:
            directory = tmp_path_factory.mktemp(f"tiny-{model_type}-{num_labels}-model")
            cache[key] = build_tiny_model(directory, model_type, num_labels=num_labels, problem_type=problem_type)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_artifact_factory(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_factory: TinyModelFactory
) -> TinyArtifactFactory:
    from slipstream.export.api import export_model

    cache: dict[tuple[str, int, tuple[str, ...], str | None], Path] = {}

    def factory(
        model_type: str = "bert",
        num_labels: int = 3,
        variants: Sequence[str] = ("fp32",),
        problem_type: str | None = None,
    ) -> Path:
        key = (model_type, num_labels, tuple(variants), problem_type)
        if key not in cache:
            model_dir = tiny_model_factory(model_type, num_labels, problem_type)
            output = tmp_path_factory.mktemp(f"tiny-{model_type}-{num_labels}-artifact") / "artifact"
            export_model(str(model_dir), output, variants=list(variants), fidelity=TINY_FIDELITY)
            cache[key] = output
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_artifact(tiny_artifact_factory: TinyArtifactFactory) -> Path:
    return tiny_artifact_factory("bert", 3, ("fp32", "int8"))


@pytest.fixture(scope="session")
def default_reranker_build() -> DefaultBuild:
    from slipstream.default_model.build import build_default
    from tests.default_model import quiet

    return build_default(REPO / DEFAULT_MODEL_DIR, REPO / DEFAULT_ARTIFACT_DIR, progress=False, log=quiet)


@pytest.fixture(scope="session")
def default_reranker_artifact(default_reranker_build: DefaultBuild) -> Path:
    assert default_reranker_build.artifact_dir is not None
    return default_reranker_build.artifact_dir
