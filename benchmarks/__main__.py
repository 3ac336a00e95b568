"""`python -m benchmarks [flags]`: the benchmark suite, run from a checkout (flags: --help)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmarks.cli import build_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
