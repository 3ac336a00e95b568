"""The `slipstream` console command.

Each stage registers its own subcommand from a small `cli` module that imports
nothing heavy at import time, so `slipstream serve` never loads torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from slipstream import __version__

# (module, registration function). Each `register(subparsers)` adds one or
# more subcommands whose `func` default is called with the parsed namespace
# and returns the process exit code.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "slipstream.export.cli",
    "slipstream.default_model.cli",
    "slipstream.server.cli",
    "slipstream.ray_serve.cli",
    "benchmarks.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slipstream",
        description=(
            "Export Hugging Face *ForSequenceClassification models to validated ONNX "
            "artifacts and serve them over HTTP from ONNX Runtime."
        ),
    )
    parser.add_argument("--version", action="version", version=f"slipstream {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A stage whose module is absent (e.g. benchmarks outside a checkout)
            # simply has no subcommand; a missing dependency inside it is a bug.
            missing = exc.name or ""
            if not (module_name == missing or module_name.startswith(missing + ".")):
                raise
            continue
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = module.register
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
