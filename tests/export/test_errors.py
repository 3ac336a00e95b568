"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import transformers

from slipstream.cli import main
from slipstream.export.architectures import supported_model_types


def run_export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["export", *args, "--quiet"])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("slipstream export: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_hub_id_while_offline(capsys, tmp_path: Path) -> None:
    code, err = run_export(capsys, "no-such-org/no-such-model", str(tmp_path / "out"))
    assert_one_line_error(code, err, "no-such-org/no-such-model", "hub cannot be reached")
    assert not (tmp_path / "out").exists()


def test_unknown_hub_id_while_online(capsys, tmp_path: Path, monkeypatch) -> None:
    """What transformers raises when the hub answers 404 (simulated: tests stay offline)."""
    import huggingface_hub.constants

    def not_on_the_hub(*args, **kwargs):
        raise OSError(
            "no-such-org/no-such-model is not a local folder and is not a valid model identifier "
            "listed on 'https://huggingface.co/models'"
        )

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", not_on_the_hub)
    code, err = run_export(capsys, "no-such-org/no-such-model", str(tmp_path / "out"))
    assert_one_line_error(code, err, "neither a local directory nor a model id on the Hugging Face hub")


def test_missing_local_directory(capsys, tmp_path: Path) -> None:
    code, err = run_export(capsys, str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert_one_line_error(code, err, "no such directory")


def test_directory_that_is_not_a_model(capsys, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("hello")
    code, err = run_export(capsys, str(tmp_path / "notes"), str(tmp_path / "out"))
    assert_one_line_error(code, err, "not a model directory", "config.json")


def test_config_json_that_is_not_a_transformers_config(capsys, tmp_path: Path) -> None:
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"hello": "world"}))
    code, err = run_export(capsys, str(tmp_path / "odd"), str(tmp_path / "out"))
    assert_one_line_error(code, err, "does not describe a transformers model")


def test_unsupported_architecture_lists_the_supported_ones(capsys, tmp_path: Path) -> None:
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50)
    transformers.GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "gpt2")
    code, err = run_export(capsys, str(tmp_path / "gpt2"), str(tmp_path / "out"))
    assert_one_line_error(code, err, "'gpt2' is not supported", *supported_model_types())


@pytest.fixture(scope="module")
def headless_bert(tmp_path_factory, tiny_model_factory: Callable[..., Path]) -> Path:
    """A BERT checkpoint saved without a classification head (a base model)."""
    source = tiny_model_factory("bert")
    directory = tmp_path_factory.mktemp("headless-bert")
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(source)
    classifier.bert.save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def test_model_without_a_classification_head_points_to_num_labels(capsys, tmp_path, headless_bert) -> None:
    code, err = run_export(capsys, str(headless_bert), str(tmp_path / "out"))
    assert_one_line_error(code, err, "no sequence-classification head", "--num-labels")
    assert not (tmp_path / "out").exists()


def test_num_labels_adds_a_random_head_to_a_base_model(capsys, tmp_path, headless_bert) -> None:
    code = main(["export", str(headless_bert), str(tmp_path / "out"), "--num-labels", "2", "--variants", "fp32"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "newly initialised" in captured.err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_labels"] == 2


def test_num_labels_that_contradicts_a_trained_head(capsys, tmp_path, tiny_model_factory) -> None:
    code, err = run_export(capsys, str(tiny_model_factory("bert")), str(tmp_path / "out"), "--num-labels", "5")
    assert_one_line_error(code, err, "3 labels", "--num-labels 5")


def test_unwritable_output_location(capsys, tmp_path, tiny_model_factory) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, err = run_export(capsys, str(tiny_model_factory("bert")), str(blocker / "artifact"))
    assert_one_line_error(code, err, "cannot write to")


def test_unknown_variant_name(capsys, tmp_path, tiny_model_factory) -> None:
    code, err = run_export(capsys, str(tiny_model_factory("bert")), str(tmp_path / "out"), "--variants", "fp32,int4")
    assert_one_line_error(code, err, "int4")


def test_max_length_beyond_what_the_model_accepts(capsys, tmp_path, tiny_model_factory) -> None:
    code, err = run_export(capsys, str(tiny_model_factory("bert")), str(tmp_path / "out"), "--max-length", "4096")
    assert_one_line_error(code, err, "--max-length", "512")


@pytest.mark.parametrize("window", ["4", "1024"])
def test_a_chunk_window_outside_the_models_length(capsys, tmp_path, tiny_model_factory, window) -> None:
    code, err = run_export(capsys, str(tiny_model_factory("bert")), str(tmp_path / "out"), "--chunk-window", window)
    assert_one_line_error(code, err, "--chunk-window", "between 8 and 512")


def test_unexpected_failure_is_one_line_too(capsys, tmp_path, tiny_model_factory, monkeypatch) -> None:
    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter exploded\nwith a second line")

    monkeypatch.setattr("slipstream.export.onnx_graph.export_onnx", broken_export)
    code, err = run_export(capsys, str(tiny_model_factory("bert")), str(tmp_path / "out"))
    assert_one_line_error(code, err, "RuntimeError", "exporter exploded", "--debug")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [], "a failed export left files behind"


def test_existing_output_dir_is_refused_without_force(capsys, tmp_path, tiny_model_factory) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    code, err = run_export(capsys, str(tiny_model_factory("bert")), str(output))
    assert_one_line_error(code, err, "already exists", "--force")
    assert (output / "keep.txt").read_text() == "mine"
