"""benchmarks/ runs from a checkout and is not part of the installed product.

`python -m benchmarks` works from the repository root; `slipstream bench` is
registered only where `benchmarks` is importable; elsewhere the `slipstream`
command has every other subcommand and no `bench`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _python(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# Prints the `slipstream` command's subcommands, one per line.
_SUBCOMMANDS = (
    "import argparse, slipstream.cli\n"
    "parser = slipstream.cli.build_parser()\n"
    "[action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]\n"
    "print('\\n'.join(action.choices))\n"
)


def test_python_m_benchmarks_takes_the_bench_flags_from_the_checkout():
    done = _python(["-m", "benchmarks", "--help"], cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m benchmarks" in done.stdout
    for flag in ("--quick", "--artifact", "--model-dir", "--configs", "--readme"):
        assert flag in done.stdout


def test_slipstream_bench_is_registered_when_benchmarks_is_importable():
    done = _python(["-c", _SUBCOMMANDS], cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "bench" in done.stdout.split()


def test_outside_a_checkout_benchmarks_is_not_installed_and_slipstream_has_no_bench(tmp_path):
    done = _python(["-c", "import importlib.util; print(importlib.util.find_spec('benchmarks'))"], cwd=tmp_path)
    assert done.stdout.strip() == "None", "benchmarks is installed with slipstream"
    done = _python(["-c", _SUBCOMMANDS], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {"export", "build-default", "serve"} <= set(done.stdout.split())
    assert "bench" not in done.stdout.split()
