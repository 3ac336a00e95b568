"""benchmarks.ab_served: two source trees serve one artifact, loaded in turn, and the ratio is reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.server.conftest import free_port_pair

REPO = Path(__file__).resolve().parents[2]


def test_the_same_tree_against_itself_gives_a_ratio_per_pair_and_their_median(tmp_path, tiny_artifact_factory):
    artifact = tiny_artifact_factory("bert", 3, ("fp32",))  # shared with the served-model tests
    ports = [str(free_port_pair()), str(free_port_pair())]  # each server's management API takes port + 1
    command = [sys.executable, "-m", "benchmarks.ab_served", "--artifact", str(artifact), "--a", str(REPO)]
    command += ["--b", str(REPO), "--pairs", "2", "--seconds", "1", "--clients", "4", "--logs", str(tmp_path)]
    command += ["--ports", *ports]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["pair 1", "pair 2"]
    assert lines[-1].startswith("median B/A over 2 pairs: ")
    assert (tmp_path / "a.log").is_file() and (tmp_path / "b.log").is_file()
