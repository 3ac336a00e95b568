"""`slipstream serve`: flags derived from the settings definitions (nothing heavy imported here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from slipstream.defaults import DEFAULT_ARTIFACT_DIR, DEFAULT_CONSUMER_GROUP

if TYPE_CHECKING:
    from slipstream.server.settings import ServiceSettings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve export artifacts over HTTP (Takeoff /classify, TEI /predict and /rerank)",
        description=(
            "Serve one artifact as consumer group `primary` (or --consumer-group), or several "
            "from a TOML/YAML --config file; add and remove models while serving through the "
            "management API on --management-port (default: port + 1). Every setting can also come from an environment "
            "variable SLIPSTREAM_<NAME> (nested ones SLIPSTREAM_CPU__INTRA_OP_THREADS; "
            "TAKEOFF_MAX_BATCH_SIZE and TAKEOFF_BATCH_DURATION_MILLIS are accepted too). "
            "Precedence: flags > environment > config file > defaults. "
            f"With no artifact and no config, serves {DEFAULT_ARTIFACT_DIR} (built by "
            "`make serve` / `slipstream build-default`). Reference: docs/serving.md."
        ),
    )
    add_serve_arguments(parser)
    parser.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from slipstream.manifest import ManifestError
    from slipstream.server.config import ConfigError

    try:
        settings = settings_from_args(args)
        check_artifacts(settings)
    except (ConfigError, ManifestError) as exc:
        print(f"slipstream serve: {exc}", file=sys.stderr)
        return 2

    from slipstream.engines.base import EngineError
    from slipstream.server.readers_file import ReadersFileError
    from slipstream.server.run import serve

    try:
        return serve(settings)
    except (ConfigError, ManifestError, EngineError, ReadersFileError) as exc:
        print(f"slipstream serve: {exc}", file=sys.stderr)
        return 2


def add_serve_arguments(
    parser: argparse.ArgumentParser,
    *,
    artifact_help: str = "export artifact to serve",
    service_title: str = "service settings",
) -> None:
    """The artifact, --config, --consumer-group and a flag per service and group setting (also `slipstream ray`)."""
    from slipstream.server.config import ARTIFACT_ENV, CONFIG_ENV, group_leaves, service_leaves
    from slipstream.settings import add_flags

    parser.add_argument(
        "artifact_dir", nargs="?", default=None, metavar="ARTIFACT_DIR", help=f"{artifact_help} (env {ARTIFACT_ENV})"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML or YAML file with service settings and [groups.<name>] tables (env {CONFIG_ENV})",
    )
    parser.add_argument(
        "--consumer-group", default=DEFAULT_CONSUMER_GROUP, help="name of the group ARTIFACT_DIR is served as"
    )
    add_flags(parser.add_argument_group(service_title), service_leaves())
    add_flags(
        parser.add_argument_group("group settings (apply to every consumer group)"), group_leaves(with_artifact=False)
    )


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    """The service's settings from the parsed `add_serve_arguments` flags, the environment and --config."""
    from slipstream.server.config import build_settings, group_leaves, service_leaves
    from slipstream.settings import flag_overrides

    return build_settings(
        artifact=args.artifact_dir,
        consumer_group=args.consumer_group,
        config_file=args.config,
        cli_service=flag_overrides(service_leaves(), args),
        cli_group=flag_overrides(group_leaves(with_artifact=False), args),
    )


def check_artifacts(settings: ServiceSettings) -> None:
    """A clear error now (ConfigError, ManifestError) rather than a traceback later, for each group's artifact."""
    from slipstream.manifest import load_manifest
    from slipstream.server.config import ConfigError

    for name, readers in settings.readers_by_group().items():
        for reader in readers:
            if Path(reader.artifact) == DEFAULT_ARTIFACT_DIR and not Path(reader.artifact).exists():
                raise ConfigError(
                    f"group {name!r}: the default model artifact {reader.artifact} does not exist yet; "
                    "build it with `make serve` (or `slipstream build-default`), or name an artifact: "
                    "`slipstream serve ARTIFACT_DIR`"
                )
            load_manifest(reader.artifact)
