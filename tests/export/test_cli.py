"""The `slipstream export` command line: help, defaults, cheap imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slipstream.cli import build_parser
from slipstream.export import api
from slipstream.export.architectures import supported_model_types


def test_help_names_every_supported_architecture_and_the_flags(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["export", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for model_type in supported_model_types():
        assert model_type in text
    for flag in ("--variants", "--force", "--num-labels", "--max-length", "--opset", "exit status"):
        assert flag in text


def test_variants_flag_takes_a_comma_separated_list() -> None:
    args = build_parser().parse_args(["export", "m", "out", "--variants", "fp32, int8"])
    assert args.variants == ["fp32", "int8"]


@pytest.mark.parametrize(("gpu", "expected"), [(False, ("fp32", "int8")), (True, ("fp32", "fp16"))])
def test_default_variants_follow_the_machine(monkeypatch, gpu: bool, expected: tuple[str, ...]) -> None:
    monkeypatch.setattr(api, "cuda_gpu_visible", lambda: gpu)
    assert api.resolve_variants(None) == expected


def test_fp32_is_always_part_of_the_artifact_and_first_as_the_reference_the_others_are_measured_against() -> None:
    assert api.resolve_variants(["int8"]) == ("fp32", "int8")
    assert api.resolve_variants(["fp16", "fp32", "fp16"]) == ("fp32", "fp16")


def test_importing_the_export_command_loads_no_heavy_library() -> None:
    code = (
        "import sys, slipstream.export.cli, slipstream.export.api; "
        "heavy = [m for m in ('torch', 'transformers', 'optimum', 'onnxruntime', 'onnx') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
