"""The artifact: manifest fields, atomic writes, --force, rejected variants."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import BertTokenizer, DebertaV2Tokenizer

from slipstream.cli import main
from slipstream.export import canned_inputs, validation
from slipstream.export.api import export_artifact, export_model
from slipstream.manifest import FORMAT_VERSION, load_manifest
from tests.export.tiny_models import write_sentencepiece_deberta_tokenizer


def _copy_model(source: Path, destination: Path, **config_changes) -> Path:
    shutil.copytree(source, destination)
    config_path = destination / "config.json"
    config = json.loads(config_path.read_text())
    config.update(config_changes)
    config_path.write_text(json.dumps(config))
    return destination


def test_manifest_records_source_labels_activation_and_versions(tiny_artifact: Path, tiny_model_factory) -> None:
    manifest = load_manifest(tiny_artifact)
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.source.model == str(tiny_model_factory("bert"))
    assert manifest.source.revision is None  # a local directory has no hub commit
    assert manifest.labels == ["LABEL_0", "LABEL_1", "LABEL_2"] and manifest.num_labels == 3
    assert manifest.problem_type == "single_label_classification"
    assert manifest.activation == "softmax"
    assert {"torch", "transformers", "optimum-onnx", "onnxruntime", "tokenizers"} <= set(manifest.versions)
    assert datetime.fromisoformat(manifest.created_at).tzinfo is not None
    # Permissions of an ordinary mkdir (not mkdtemp's private 0700), so other users can read it.
    umask = os.umask(0)
    os.umask(umask)
    assert tiny_artifact.stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(path.name for path in tiny_artifact.iterdir()) == [
        "manifest.json",
        "model.fp32.onnx",
        "model.int8.onnx",
        "tokenizer.json",
    ]


def test_id2label_names_become_the_labels(tmp_path: Path, tiny_model_factory) -> None:
    model = _copy_model(
        tiny_model_factory("bert"),
        tmp_path / "model",
        id2label={"0": "negative", "1": "neutral", "2": "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    manifest = export_model(str(model), tmp_path / "artifact", variants=["fp32"])
    assert manifest.labels == ["negative", "neutral", "positive"]


@pytest.mark.parametrize(
    ("num_labels", "problem_type", "expected_problem", "activation"),
    [
        (4, "multi_label_classification", "multi_label_classification", "sigmoid"),
        (1, None, "regression", "none"),  # a one-logit cross-encoder
    ],
)
def test_problem_type_implies_the_activation(
    tiny_artifact_factory, num_labels, problem_type, expected_problem, activation
) -> None:
    manifest = load_manifest(tiny_artifact_factory("distilbert", num_labels, ("fp32",), problem_type))
    assert manifest.num_labels == num_labels and len(manifest.labels) == num_labels
    assert manifest.problem_type == expected_problem
    assert manifest.activation == activation


def test_max_length_caps_the_declared_sequence_length(tmp_path: Path, tiny_model_factory) -> None:
    manifest = export_model(str(tiny_model_factory("roberta")), tmp_path / "a", variants=["fp32"], max_length=128)
    assert manifest.max_sequence_length == 128
    assert manifest.chunk_window is None  # chunking uses the whole window unless the export says otherwise


def test_chunk_window_records_the_window_servers_chunk_long_inputs_by(tmp_path: Path, tiny_model_factory) -> None:
    manifest = export_model(str(tiny_model_factory("bert")), tmp_path / "a", variants=["fp32"], chunk_window=96)
    assert manifest.chunk_window == 96 == load_manifest(tmp_path / "a").chunk_window


def _assert_pairs_encode_like(slow, tokenizer_file: Path) -> None:
    """The written fast tokenizer builds every canned pair exactly as `slow` does."""
    written = Tokenizer.from_file(str(tokenizer_file))
    for query, passage in zip(canned_inputs.QUERIES, canned_inputs.PASSAGES, strict=True):
        expected = slow(query, passage, return_token_type_ids=True)
        encoding = written.encode(query, passage)
        assert encoding.ids == expected["input_ids"]
        assert encoding.type_ids == expected["token_type_ids"]


def test_a_slow_only_tokenizer_is_converted_and_pairs_match_it(tmp_path: Path, tiny_model_factory) -> None:
    model = _copy_model(tiny_model_factory("bert"), tmp_path / "model")
    (model / "tokenizer.json").unlink()  # leave only vocab.txt: transformers' slow BertTokenizer
    manifest = export_model(str(model), tmp_path / "artifact", variants=["fp32"])
    slow = BertTokenizer.from_pretrained(model)
    _assert_pairs_encode_like(slow, tmp_path / "artifact" / manifest.tokenizer.file)


def test_a_sentencepiece_only_tokenizer_is_converted_and_pairs_match_it(tmp_path: Path, tiny_model_factory) -> None:
    model = _copy_model(tiny_model_factory("deberta-v2"), tmp_path / "model")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    write_sentencepiece_deberta_tokenizer(model)  # spm.model only, as DeBERTa-v3 ships
    assert not (model / "tokenizer.json").exists()
    manifest = export_model(str(model), tmp_path / "artifact", variants=["fp32"])
    slow = DebertaV2Tokenizer.from_pretrained(model)
    _assert_pairs_encode_like(slow, tmp_path / "artifact" / manifest.tokenizer.file)
    assert manifest.tokenizer.special_tokens["cls_token"] == "[CLS]"


def test_force_replaces_an_existing_artifact(tmp_path: Path, tiny_model_factory, capsys) -> None:
    output = tmp_path / "artifact"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    code = main(["export", str(tiny_model_factory("bert")), str(output), "--force", "--variants", "fp32", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert not (output / "stale.txt").exists()
    assert load_manifest(output).variants.keys() == {"fp32"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"], "temporary directories were left behind"


def test_an_interrupted_export_leaves_nothing_and_keeps_the_old_artifact(
    tmp_path: Path, tiny_model_factory, monkeypatch
) -> None:
    output = tmp_path / "artifact"
    output.mkdir()
    (output / "previous.txt").write_text("previous artifact")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("slipstream.export.graph_optimization.quantize_int8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(str(tiny_model_factory("bert")), output, variants=["fp32", "int8"], force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]
    assert sorted(p.name for p in output.iterdir()) == ["previous.txt"]


def test_a_variant_that_fails_validation_is_left_out_and_the_cli_says_why(
    tmp_path: Path, tiny_model_factory, monkeypatch, capsys
) -> None:
    impossible = validation.Tolerance(min_top1_agreement=1.01)
    monkeypatch.setitem(validation.TOLERANCES, "int8", impossible)
    output = tmp_path / "artifact"
    code = main(["export", str(tiny_model_factory("bert")), str(output), "--variants", "fp32,int8", "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert "variant int8 failed validation and was not written" in err
    assert "top-1 agreement >= 1.01" in err
    assert sorted(load_manifest(output).variants) == ["fp32"]
    assert not (output / "model.int8.onnx").exists()


def test_fp32_that_fails_validation_writes_no_artifact(tmp_path: Path, tiny_model_factory, monkeypatch) -> None:
    monkeypatch.setitem(validation.TOLERANCES, "fp32", validation.Tolerance(max_abs_diff=-1.0))
    from slipstream.export.errors import ExportError

    with pytest.raises(ExportError, match="fp32 export does not match PyTorch"):
        export_artifact(str(tiny_model_factory("bert")), tmp_path / "artifact", variants=["fp32"])
    assert list(tmp_path.iterdir()) == []


def test_progress_reports_the_slow_steps(tmp_path: Path, tiny_model_factory) -> None:
    messages: list[str] = []
    export_model(str(tiny_model_factory("bert")), tmp_path / "a", variants=["fp32"], progress=messages.append)
    text = "\n".join(messages)
    for step in ("loading", "exporting to ONNX", "fusing", "validating fp32", "tokenizer.json"):
        assert step in text
