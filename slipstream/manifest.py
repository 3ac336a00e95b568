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
# How engines run a variant so that an item's logits cannot depend on its batch:
# "batched": any batch, padded to any length (the kernels are row-independent);
# "per_item": each item alone, unpadded (dynamic int8 quantizes activations with
# one scale per run, so batch-mates and padding would change an item's result).
Execution = Literal["batched", "per_item"]
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


class Fidelity(msgspec.Struct, frozen=True, kw_only=True):
    """How one variant agrees with the fp32 variant on the export's real-text set
    (queries and passages from the Python documentation, run as engines run them)."""

    task: Literal["rerank", "classification"]  # rerank: one logit, ranked within each query
    n_queries: int  # rerank: queries ranked; classification: 0
    n_inputs: int
    top1_agreement: float  # rerank: same best passage per query; classification: same arg-max label
    spearman_per_query: float | None  # rerank: mean per-query Spearman of the scores; None otherwise
    max_abs_diff: float  # largest |logit - fp32 logit|
    meets_bars: bool  # whether it met `criteria`; only such a variant is served without being asked for
    criteria: str


class Invariance(msgspec.Struct, frozen=True, kw_only=True):
    """How far an item's logits may move with what shares its run: batch-mates,
    its position in the batch, the padded length, runs executing in parallel."""

    devices: list[str]  # "cpu", or the GPU devices ("cuda", "tensorrt")
    guarantee: Literal["bitwise", "tolerance"]
    max_abs_diff: float  # the bound on |co-batched - alone|: 0.0 when bitwise
    # What export measured on this kind of device; None where it had none (a GPU).
    measured_max_abs_diff: float | None
    n_inputs: int  # inputs measured (0 when not measured)
    basis: str  # why the bound holds, and where it was measured


class Quantization(msgspec.Struct, frozen=True, kw_only=True):
    """How an int8 variant was made, decided and recorded at export."""

    method: Literal["dynamic"]  # weights int8 ahead of time, activations quantized per run
    op_types: list[str]
    per_channel: bool
    # 7-bit weights: needed where the CPU lacks VNNI (u8s8 kernels saturate 16-bit sums).
    reduce_range: bool
    # CPU flags (any one of them) this variant's weights need to compute without
    # saturating; engines skip the variant on a CPU without them. Empty: any x86-64 CPU.
    needs_any_cpu_flag: list[str] = []
    nodes_kept_fp32: list[str] = []  # the most sensitive MatMuls, left in fp32
    smoothing_alpha: float | None = None  # activation outliers moved into the weights (SmoothQuant)
    exported_on: str = ""  # the CPU and its flags that mattered, where the choice was made


class Variant(msgspec.Struct, frozen=True, kw_only=True):
    name: VariantName
    file: str
    sha256: str
    size_bytes: int
    # The devices this variant is meant for: int8 for CPU, fp16 for GPU, fp32 any.
    intended_devices: list[str]
    validation: Validation
    # None: written before Slipstream recorded it; see `runs_per_item`.
    execution: Execution | None = None
    fidelity: Fidelity | None = None  # None for fp32 (the reference) and older artifacts
    invariance: list[Invariance] = []
    quantization: Quantization | None = None

    @property
    def runs_per_item(self) -> bool:
        """Whether engines must run each item alone, unpadded. Artifacts from before
        the field existed had only dynamically quantized int8 variants needing it."""
        if self.execution is None:
            return self.name == "int8"
        return self.execution == "per_item"

    def invariance_on(self, device: str) -> Invariance | None:
        """The batch-invariance guarantee recorded for `device` ("cpu", "cuda", "tensorrt")."""
        return next((record for record in self.invariance if device in record.devices), None)


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


# The shortest chunking window a group or an artifact may ask for (special tokens included).
MIN_CHUNK_WINDOW = 8


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
    # Tokens per window this model ranks long inputs best with (`slipstream export --chunk-window`):
    # what a group serves when its own `chunk_window` is unset. None: the whole max_sequence_length.
    chunk_window: int | None = None

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
