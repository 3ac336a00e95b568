"""Tests of slipstream.default_model: corpus, distillation, caching and export, the command.

The mechanics run on a tiny BERT teacher (the export fixtures' random model)
with a few steps, so they take seconds; the real recipe on all-MiniLM-L6-v2 is
exercised by the slow test in test_distill.py (the session fixture
`short_default_reranker`, which the long-input serving tests share).
"""

from slipstream.default_model.recipe import DistillRecipe

# The real recipe on all-MiniLM-L6-v2, shortened: the full one is `make default-artifact`.
SHORT_DEFAULT_RECIPE = DistillRecipe(steps=60, train_passages=400, eval_queries=40)


def quiet(message: str) -> None:
    """A build's `log` that prints nothing."""
    del message
