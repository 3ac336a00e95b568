"""`python -m benchmarks.offline` on a tiny artifact: every runner, extra ONNX files included, is timed and reported.

Behaviour only: which runners ran and that the report is complete, never how fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec

from benchmarks.offline import Report

REPO = Path(__file__).resolve().parents[2]


def test_offline_benchmark_times_pytorch_each_variant_and_extra_onnx_files(tmp_path, tiny_artifact, tiny_model_factory):
    output = tmp_path / "offline.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.offline",
        "--artifact",
        str(tiny_artifact),
        "--model-dir",
        str(tiny_model_factory("bert", 3)),
        "--texts",
        "48",
        "--batch-size",
        "2",
        "--rounds",
        "1",
        "--threads",
        "1",
        "--sweep-iterations",
        "0",
        "--extra",
        f"same-fp32={tiny_artifact / 'model.fp32.onnx'}",
        "--output",
        str(output),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = msgspec.json.decode(output.read_bytes(), type=Report)
    runners = {r.runner: r for r in report.runners}
    assert set(runners) == {"pytorch-fp32-eager", "slipstream-fp32", "slipstream-int8", "onnx-same-fp32"}
    for result in runners.values():
        assert result.median_pass_s > 0 and result.sequences_per_s > 0
    # The extra file runs on the same batches: it shows up per bucket like the variants.
    assert {b.runner for b in report.per_bucket} >= {"onnx-same-fp32", "slipstream-fp32"}
    assert "onnx-same-fp32" in output.with_suffix(".md").read_text()


def test_extra_onnx_files_are_given_as_name_equals_path():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.offline", "--extra", "no-path-here"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "NAME=MODEL.onnx" in done.stderr
