"""The export artifact's manifest: the contract between export and engines.

An artifact is a directory::

    manifest.json      this schema, JSON
    tokenizer.json     a fast (Rust `tokenizers`) tokenizer, post-processor included
    model.fp32.onnx    one file per variant that passed validation
    model.int8.onnx
    model.fp16.onnx

This module has no heavy dependencies (msgspec only) so that the runtime can
read what export wrote. Every field is documented in docs/export.md#artifact-format;
bump FORMAT_VERSION on any incompatible change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import msgspec

from slipstream.json_files import write_json

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"

VariantName = Literal["fp32", "int8", "fp16"]
Activation = Literal["softmax", "sigmoid", "none"]
ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]


class ManifestError(ValueError):
    """The artifact directory is missing, corrupt or of an unsupported format."""


class Validation(msgspec.Struct, frozen=True, kw_only=True):
    """How one variant compared with the PyTorch model on the canned inputs."""

    passed: bool
    n_inputs: int
    max_abs_diff: float
    top1_agreement: float
    # Spearman rank correlation of the scores (per label, pooled), or None
    # when there is too little spread to rank.
    rank_correlation: float | None
    criteria: str  # human-readable acceptance rule this variant was held to


class Variant(msgspec.Struct, frozen=True, kw_only=True):
    name: VariantName
    file: str
    sha256: str
    size_bytes: int
    # The devices this variant is meant for: int8 for CPU, fp16 for GPU, fp32 any.
    intended_devices: list[str]
    validation: Validation


class Source(msgspec.Struct, frozen=True, kw_only=True):
    model: str  # hub id or local path as given to `slipstream export`
    revision: str | None = None  # commit hash when known


class TokenizerInfo(msgspec.Struct, frozen=True, kw_only=True):
    file: str = TOKENIZER_FILE
    pad_token: str
    pad_token_id: int
    # Named special tokens (cls_token, sep_token, unk_token, ...) -> token text.
    special_tokens: dict[str, str]
    # Whether the model takes a token_type_ids input (BERT does, RoBERTa does not).
    uses_token_type_ids: bool
    # Pairs: truncate the second text first so the query survives ("only_second"
    # falls back to "longest_first" when the first alone is too long).
    pair_truncation: str = "only_second"


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    format_version: int
    source: Source
    architecture: str  # e.g. "BertForSequenceClassification"
    model_type: str  # e.g. "bert"
    labels: list[str]  # index i is the name of logit i (id2label, LABEL_i fallback)
    num_labels: int
    problem_type: ProblemType
    activation: Activation  # implied by problem_type; what "activation: auto" applies
    max_sequence_length: int  # longest input (special tokens included) the model accepts
    input_names: list[str]  # ONNX graph inputs, in order
    output_name: str  # ONNX graph output holding logits [batch, num_labels]
    tokenizer: TokenizerInfo
    variants: dict[str, Variant]  # keyed by variant name
    versions: dict[str, str]  # library versions used to export and validate
    created_at: str  # ISO 8601, UTC

    def variant(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise ManifestError(f"variant {name!r} is not in this artifact; it has {sorted(self.variants)}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> None:
    write_json(Path(directory) / MANIFEST_FILE, manifest)


def load_manifest(directory: Path | str) -> Manifest:
    """Read and check an artifact's manifest (not the model files' hashes)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{directory} is not a Slipstream artifact: no {MANIFEST_FILE}")
    try:
        raw = msgspec.json.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise ManifestError(f"{path} has format_version {version!r}; this Slipstream reads {FORMAT_VERSION}")
    try:
        return msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"{path} does not match the manifest schema: {exc}") from None


def verify_variant_file(directory: Path | str, variant: Variant) -> Path:
    """Return the variant's model path after checking its size and sha256."""
    path = Path(directory) / variant.file
    if not path.is_file():
        raise ManifestError(f"variant {variant.name}: {path} is missing")
    if path.stat().st_size != variant.size_bytes or sha256_of(path) != variant.sha256:
        raise ManifestError(
            f"variant {variant.name}: {path} does not match the manifest's sha256/size; "
            "the artifact is corrupt or was edited after export; export it again"
        )
    return path
