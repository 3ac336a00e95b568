"""`python -m tests.ray_serve.fake_ray {ray,serve} [slipstream arguments] --engine-delay-s S`

The real `slipstream ray` (or `slipstream serve`) path: flags, settings, Ray, Serve,
signals; with `RecordingEngine` for artifacts written by `write_fake_artifact` and the
real ONNX Runtime engine for real artifacts, so the Ray tests can slow an engine down
and compare real answers with a plain server's.
"""

from __future__ import annotations

import argparse
import functools
import sys

from slipstream.batching.group import load_engine_for
from slipstream.batching.settings import GroupSettings
from slipstream.engines.base import Engine
from slipstream.manifest import Manifest
from tests.batching.fakes import RecordingEngine

FAKE_MODEL = "fake-model-for-tests"


def engine_for(settings: GroupSettings, manifest: Manifest, *, delay_s: float, max_batch_size: int) -> Engine:
    """A slowed-down recording engine for a fake artifact; the real engine otherwise."""
    if manifest.source.model != FAKE_MODEL:
        return load_engine_for(settings, manifest)
    edges = [8, 16, 32, manifest.max_sequence_length]
    return RecordingEngine(edges, max_batch_size=max_batch_size, delay_s=delay_s, num_labels=manifest.num_labels)


def main() -> int:
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--engine-delay-s", type=float, default=0.0)
    ours.add_argument("--engine-max-batch-size", type=int, default=16)
    fake, rest = ours.parse_known_args()
    factory = functools.partial(engine_for, delay_s=fake.engine_delay_s, max_batch_size=fake.engine_max_batch_size)

    from slipstream.cli import build_parser

    args = build_parser().parse_args(rest)
    if args.command == "serve":
        from slipstream.server.cli import settings_from_args
        from slipstream.server.run import serve

        return serve(settings_from_args(args), engine_factory=factory)

    from slipstream.ray_serve.cli import settings_from
    from slipstream.ray_serve.run import run

    settings, ray_settings = settings_from(args)
    return run(settings, ray_settings, engine_factory=factory)


if __name__ == "__main__":
    sys.exit(main())
