# Two commands a newcomer needs: `make serve` and `make test`. `make lint` is what CI checks first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Where the default model is built and exported (ignored by git).
DEFAULT_MODEL_DIR ?= models/default-reranker
DEFAULT_ARTIFACT_DIR ?= artifacts/default-reranker
PORT ?= 3000

.PHONY: venv test lint serve default-artifact bench bench-quick clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,export,test,bench,lint,ray]'
	touch $(STAMP)

# Two workers (how tests/conftest.py shares them out): most tests wait on servers and clients, so the
# default reranker's build overlaps them. No reorder: its tests are collected first, and must start first.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --no-loadscope-reorder

# The same checks pre-commit runs (.pre-commit-config.yaml), configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

default-artifact: $(STAMP)
	$(BIN)/slipstream build-default --model-dir $(DEFAULT_MODEL_DIR) --artifact-dir $(DEFAULT_ARTIFACT_DIR)

serve: default-artifact
	$(BIN)/slipstream serve $(DEFAULT_ARTIFACT_DIR) --port $(PORT)

# benchmarks/ is not installed: it runs from this checkout.
bench: default-artifact
	$(BIN)/python -m benchmarks --artifact $(DEFAULT_ARTIFACT_DIR)

bench-quick: default-artifact
	$(BIN)/python -m benchmarks --quick --artifact $(DEFAULT_ARTIFACT_DIR)

clean:
	rm -rf $(VENV) artifacts models .pytest_cache
