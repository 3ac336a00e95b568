"""Defaults shared by the command line, the Makefile and the Dockerfile."""

from __future__ import annotations

from pathlib import Path

# The default reranker distilled from all-MiniLM-L6-v2 (see slipstream/default_model/).
DEFAULT_MODEL_DIR = Path("models/default-reranker")
# Its export artifact: what `slipstream serve` serves when no artifact is named.
DEFAULT_ARTIFACT_DIR = Path("artifacts/default-reranker")
DEFAULT_PORT = 3000
DEFAULT_CONSUMER_GROUP = "primary"
