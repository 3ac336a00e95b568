"""`slipstream build-default`: registered with the Makefile's flags, reports what it built or reused."""

from __future__ import annotations

from pathlib import Path

from slipstream.default_model import build


def test_build_default_command_reports_the_cached_model_and_artifact(
    tmp_path, tiny_default_model, tiny_recipe, monkeypatch, capsys
):
    from slipstream.cli import main

    monkeypatch.setattr(build, "DEFAULT_RECIPE", tiny_recipe)
    artifact = tmp_path / "artifact"
    argv = [
        "build-default",
        "--model-dir",
        str(tiny_default_model),
        "--artifact-dir",
        str(artifact),
        "--variants",
        "fp32",
        "--quiet",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "cached" in out and "exported now" in out and "Spearman" in out
    assert main(argv) == 0
    assert "already up to date" in capsys.readouterr().out


def test_build_default_command_is_registered_with_the_makefile_flags():
    from slipstream.cli import build_parser

    args = build_parser().parse_args(
        ["build-default", "--model-dir", "models/default-reranker", "--artifact-dir", "artifacts/default-reranker"]
    )
    assert args.model_dir == Path("models/default-reranker")
    assert args.artifact_dir == Path("artifacts/default-reranker")
    assert callable(args.func)
