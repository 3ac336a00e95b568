"""`python -m tests.server.fake_server ARTIFACT [serve flags] --engine-delay-s S --engine-fail-on-id N ...`

The real `slipstream serve` path (config, app, uvicorn, signals) with `RecordingEngine`
in place of ONNX Runtime, so HTTP tests can slow the engine down, make it fail, or make it hang
on a token id (`--engine-hang-on-id`: a wedged engine, for the batch watchdog).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from slipstream.batching.settings import GroupSettings
from slipstream.manifest import Manifest
from slipstream.server.config import build_settings
from slipstream.server.run import serve
from slipstream.settings import set_path
from tests.batching.fakes import RecordingEngine


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("artifact", nargs="?", default=None)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine-delay-s", type=float, default=0.0)
    parser.add_argument("--engine-fail-on-id", type=int, default=None)
    parser.add_argument("--engine-hang-on-id", type=int, default=None)
    parser.add_argument("--engine-max-batch-size", type=int, default=16)
    parser.add_argument(
        "--set", action="append", default=[], help="group setting name=value (dotted: cpu.parallel_runs)"
    )
    parser.add_argument("--service", action="append", default=[], help="service setting name=value")
    args = parser.parse_args()
    cli_group: dict[str, Any] = {}
    cli_service: dict[str, Any] = {"port": args.port, "host": "127.0.0.1", "log_level": "warning"}
    for tree, items in ((cli_group, args.set), (cli_service, args.service)):
        for item in items:
            key, value = item.split("=", 1)
            set_path(tree, tuple(key.split(".")), value)
    settings = build_settings(
        artifact=args.artifact, config_file=args.config, cli_service=cli_service, cli_group=cli_group
    )

    def factory(group_settings: GroupSettings, manifest: Manifest) -> RecordingEngine:
        edges = [8, 16, 32, manifest.max_sequence_length]
        return RecordingEngine(
            edges,
            max_batch_size=args.engine_max_batch_size,
            delay_s=args.engine_delay_s,
            fail_on_id=args.engine_fail_on_id,
            hang_on_id=args.engine_hang_on_id,
            num_labels=manifest.num_labels,
        )

    return serve(settings, engine_factory=factory)


if __name__ == "__main__":
    sys.exit(main())
