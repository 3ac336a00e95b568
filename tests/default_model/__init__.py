"""Tests of slipstream.default_model: corpus, distillation, caching and export, the command.

The mechanics run on a tiny BERT teacher (the export fixtures' random model)
with a few steps, so they take seconds; the real recipe on all-MiniLM-L6-v2 is
exercised by the slow tests of test_real_model.py, on the build `make serve`
makes (the session fixture `default_reranker_build`).
"""


def quiet(message: str) -> None:
    """A build's `log` that prints nothing."""
    del message
