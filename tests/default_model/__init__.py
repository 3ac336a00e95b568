"""Tests of slipstream.default_model: corpus, distillation, caching and export, the command.

The mechanics run on a tiny BERT teacher (the export fixtures' random model)
with a few steps, so they take seconds; the real recipe on all-MiniLM-L6-v2 is
exercised by the slow test in test_distill.py.
"""


def quiet(message: str) -> None:
    """A build's `log` that prints nothing."""
    del message
