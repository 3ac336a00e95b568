"""`python -m benchmarks.long_text` on a tiny model: both modes run and the report is complete.

Behaviour only: which phases ran and what they counted, never how fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec

from benchmarks.long_text import Report

REPO = Path(__file__).resolve().parents[2]


def test_long_text_benchmark_sends_the_same_passages_truncated_and_chunked(tmp_path, tiny_artifact_factory):
    artifact = tiny_artifact_factory("bert", 3, ("fp32",))  # shared with the served-model tests
    output = tmp_path / "long-text"
    command = [sys.executable, "-m", "benchmarks.long_text", "--artifact", str(artifact), "--output", str(output)]
    command += ["--requests", "2", "--passages", "3", "--passage-words", "400", "--clients", "2"]
    command += ["--seconds", "0.5", "--rounds", "1", "--serve-flag=--device=cpu"]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = msgspec.json.decode((output / "results.json").read_bytes(), type=Report)
    assert [(phase.mode, phase.round) for phase in report.phases] == [("truncate", 1), ("chunk", 1)]
    assert all(phase.passages > 0 and phase.errors == 0 for phase in report.phases)
    truncated, chunked = report.summary
    assert report.passages_over_window == 1.0
    assert truncated.windows_per_passage == 1.0 and chunked.windows_per_passage > 1.0
    assert report.phases[0].chunk_windows == 0 and report.phases[1].chunk_windows == report.phases[1].engine_items
    assert report.serve_flags == ["--device=cpu"]
    assert "truncate / chunk passages/s" in (output / "results.md").read_text()
