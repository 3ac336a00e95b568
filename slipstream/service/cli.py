"""`slipstream serve`: flags derived from the settings in `config.py` (nothing heavy imported here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slipstream.defaults import DEFAULT_ARTIFACT_DIR, DEFAULT_CONSUMER_GROUP


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from slipstream.service.config import GroupSettings, ServiceSettings, describe_fields, env_name

    parser = subparsers.add_parser(
        "serve",
        help="serve export artifacts over HTTP (Takeoff /classify, TEI /predict and /rerank)",
        description=(
            "Serve one artifact as consumer group `primary` (or --consumer-group), or several "
            "from a TOML/YAML --config file. Every setting can also come from an environment "
            "variable SLIPSTREAM_<NAME> (TAKEOFF_MAX_BATCH_SIZE and TAKEOFF_BATCH_DURATION_MILLIS "
            "are accepted too). Precedence: flags > environment > config file > defaults. "
            f"With no artifact and no config, serves {DEFAULT_ARTIFACT_DIR} (built by "
            "`make serve` / `slipstream build-default`)."
        ),
    )
    parser.add_argument("artifact_dir", nargs="?", default=None, metavar="ARTIFACT_DIR",
                        help="export artifact to serve (env SLIPSTREAM_ARTIFACT)")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML or YAML file with service settings and [groups.<name>] tables "
                             "(env SLIPSTREAM_CONFIG)")
    parser.add_argument("--consumer-group", default=DEFAULT_CONSUMER_GROUP,
                        help="name of the group ARTIFACT_DIR is served as")
    service = parser.add_argument_group("service settings")
    for name, default, description in describe_fields(ServiceSettings):
        if name == "groups":
            continue
        service.add_argument(f"--{name.replace('_', '-')}", dest=f"service__{name}", default=None,
                             metavar=name.upper(), help=f"{description} [{default}; env {env_name(name)}]")
    group = parser.add_argument_group("group settings (apply to every consumer group)")
    for name, default, description in describe_fields(GroupSettings):
        if name == "artifact":
            continue
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"group__{name}", default=None,
                           metavar=name.upper(), help=f"{description} [{default}; env {env_name(name)}]")
    parser.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from slipstream.manifest import ManifestError, load_manifest
    from slipstream.service.config import ConfigError, build_settings

    values = vars(args)
    cli_service = {k.removeprefix("service__"): v for k, v in values.items() if k.startswith("service__")}
    cli_group = {k.removeprefix("group__"): v for k, v in values.items() if k.startswith("group__")}
    try:
        settings = build_settings(
            artifact=args.artifact_dir,
            consumer_group=args.consumer_group,
            config_file=args.config,
            cli_service=cli_service,
            cli_group=cli_group,
        )
        for name, group in settings.groups.items():
            if Path(group.artifact) == DEFAULT_ARTIFACT_DIR and not Path(group.artifact).exists():
                raise ConfigError(
                    f"group {name!r}: the default model artifact {group.artifact} does not exist yet; "
                    "build it with `make serve` (or `slipstream build-default`), or name an artifact: "
                    "`slipstream serve ARTIFACT_DIR`"
                )
            load_manifest(group.artifact)  # a clear error now rather than a traceback later
    except (ConfigError, ManifestError) as exc:
        print(f"slipstream serve: {exc}", file=sys.stderr)
        return 2

    from slipstream.engines.base import EngineError
    from slipstream.service.server import serve

    try:
        return serve(settings)
    except (ConfigError, ManifestError, EngineError) as exc:
        print(f"slipstream serve: {exc}", file=sys.stderr)
        return 2
