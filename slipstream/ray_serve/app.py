"""The Ray Serve application: Slipstream's deployment bound to its settings.

`build` is the `import_path` of the Serve config that `slipstream ray --print-config`
writes (`serve deploy`, KubeRay's serveConfigV2): Ray calls it with the config's
`args`, `{"settings": {...}}` (what differs from the defaults, in config-file form).
The deployment's options come from the config's `deployments:` entry, which Ray
applies over the ones set here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec
from ray.serve import Application

from slipstream.batching.group import EngineFactory
from slipstream.ray_serve.config import deployment_options, given_settings, resolve_settings
from slipstream.ray_serve.deployment import SLIPSTREAM_DEPLOYMENT
from slipstream.ray_serve.settings import RaySettings
from slipstream.server.config import ConfigError
from slipstream.server.settings import ServiceSettings
from slipstream.settings import env_overrides, leaves


def application(
    settings: ServiceSettings, ray: RaySettings, *, engine_factory: EngineFactory | None = None
) -> Application:
    """The deployment with its options, bound to the settings every replica will run."""
    deployment = SLIPSTREAM_DEPLOYMENT.options(**deployment_options(settings, ray))
    return deployment.bind(given_settings(settings), engine_factory, read_environment=False)


def build(args: Mapping[str, Any]) -> Application:
    """The Serve config's application builder: `args` is `{"settings": {...}}`."""
    unknown = set(args) - {"settings"}
    if unknown:
        raise ConfigError(f"unknown args {sorted(unknown)} in the Serve config; expected only `settings`")
    given = args.get("settings") or {}
    settings = resolve_settings(given, os.environ)  # fails here, on the driver, rather than in every replica
    ray = msgspec.convert(env_overrides(leaves(RaySettings), os.environ), RaySettings, strict=False)
    deployment = SLIPSTREAM_DEPLOYMENT.options(**deployment_options(settings, ray))
    return deployment.bind(dict(given), None, read_environment=True)
