"""`slipstream ray`: flags derived from the settings definitions; Ray is imported only when it runs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slipstream.ray_serve.settings import RaySettings
    from slipstream.server.settings import ServiceSettings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from slipstream.ray_serve.settings import RaySettings
    from slipstream.server.cli import add_serve_arguments
    from slipstream.settings import add_flags, leaves

    parser = subparsers.add_parser(
        "ray",
        help="serve through Ray Serve: replicas of the whole server, routing, autoscaling (needs slipstream[ray])",
        description=(
            "Deploy Slipstream as a Ray Serve application: each replica runs the whole server (engines and "
            "length-bucketed batchers) and Ray's HTTP proxy serves the same API on --port. Starts a local Ray "
            "unless --address (or RAY_ADDRESS) names a cluster; stays in the foreground; SIGTERM or Ctrl-C "
            "drains the replicas and stops what it started. Takes the settings of `slipstream serve` (flags, "
            "SLIPSTREAM_* variables, --config) plus the Ray settings below. Guide: docs/deploy.md."
        ),
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="write the Ray Serve config (for `serve deploy` and KubeRay's serveConfigV2) to stdout and exit",
    )
    add_serve_arguments(
        parser,
        artifact_help="export artifact to serve, a path on every Ray node",
        service_title="service settings (host and port are the Ray Serve proxy's)",
    )
    add_flags(parser.add_argument_group("Ray settings"), leaves(RaySettings))
    parser.set_defaults(func=_run_ray)


def settings_from(args: argparse.Namespace) -> tuple[ServiceSettings, RaySettings]:
    """The service's and Ray's settings from the parsed flags, the environment and --config (ConfigError)."""
    import msgspec

    from slipstream.ray_serve.settings import RaySettings
    from slipstream.server.cli import settings_from_args
    from slipstream.server.config import ConfigError
    from slipstream.settings import deep_merge, env_overrides, flag_overrides, leaves

    settings = settings_from_args(args)
    ray_leaves = list(leaves(RaySettings))
    ray_values = deep_merge(env_overrides(ray_leaves, os.environ), flag_overrides(ray_leaves, args))
    try:
        return settings, msgspec.convert(ray_values, RaySettings, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid Ray setting: {exc}") from None


def _run_ray(args: argparse.Namespace) -> int:
    from slipstream.manifest import ManifestError
    from slipstream.ray_serve.config import ignored_management_settings, unenforced_edge_settings
    from slipstream.server.cli import check_artifacts
    from slipstream.server.config import ConfigError

    try:
        settings, ray_settings = settings_from(args)
        ignored = ignored_management_settings(settings)
        if ignored:
            print(
                f"slipstream ray: the management API is not served through Ray; ignoring {', '.join(ignored)}",
                file=sys.stderr,
            )
        unenforced = unenforced_edge_settings(settings)
        if unenforced:
            print(
                f"slipstream ray: Ray Serve's proxy has no header deadline and no connection cap; ignoring "
                f"{', '.join(unenforced)} (set them on the load balancer in front: docs/deploy.md#slow-clients)",
                file=sys.stderr,
            )
        if args.print_config:
            return _print_config(settings, ray_settings)
        if not (ray_settings.address or os.environ.get("RAY_ADDRESS")):
            check_artifacts(settings)  # a local Ray reads them from this machine: say now if one is missing
    except (ConfigError, ManifestError) as exc:
        print(f"slipstream ray: {exc}", file=sys.stderr)
        return 2

    try:
        from slipstream.ray_serve.run import run
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "ray":
            raise
        print("slipstream ray: Ray Serve is not installed; pip install 'slipstream[ray]'", file=sys.stderr)
        return 2
    return run(settings, ray_settings)


def _print_config(settings: ServiceSettings, ray_settings: RaySettings) -> int:
    import yaml

    from slipstream.ray_serve.config import serve_config

    if settings.api_key:
        print(
            "slipstream ray: the API key is not written into the config; set SLIPSTREAM_API_KEY on the Ray "
            "nodes (from a secret)",
            file=sys.stderr,
        )
    header = "# Ray Serve config, written by `slipstream ray --print-config` (serve deploy; KubeRay serveConfigV2)\n"
    sys.stdout.write(header + yaml.safe_dump(serve_config(settings, ray_settings), sort_keys=False))
    return 0
