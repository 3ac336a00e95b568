"""What goes to Ray: the replicas' settings, the deployment's options, the whole Serve config.

The replicas get the settings that differ from the defaults (`given_settings`) and
resolve the rest on their own node (`resolve_settings`): defaults that name local
paths (the TensorRT engine cache under the home directory) are the replica's, not
the machine that deployed it. Deployed from a Serve config, the given settings are
a config file to the replica, under its environment's `SLIPSTREAM_*` variables (an
API key from a Kubernetes Secret); deployed by `slipstream ray`, they are final (its
own flags and environment are in them already).

`serve_config` is `slipstream ray --print-config`: the file for `serve deploy` and
for KubeRay's `serveConfigV2`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from slipstream.ray_serve.autoscaling import POLICY_PATH
from slipstream.ray_serve.settings import RaySettings
from slipstream.server.config import build_settings
from slipstream.server.settings import GroupConfig, HttpLimits, ServiceSettings

APP_BUILDER = "slipstream.ray_serve.app:build"
DEPLOYMENT_NAME = "Slipstream"
# Ray's backpressure (max_queued_requests) answers like the replicas' own overload: 429, Retry-After.
BACKPRESSURE = {"status_code": 429, "retry_after_s": 1.0}
# Service settings that are the Ray proxy's, not the replicas' (they do not listen): host, port and the
# keep-alive timeout go to `http_options` (`proxy_http_options`), the body deadline to the proxy middleware.
PROXY_SETTINGS = ("host", "port", "http")
# The edge limits of `slipstream serve` (slipstream.server.edge) that Ray's proxy has no way to apply.
UNENFORCED_EDGE_SETTINGS = ("header_timeout_s", "max_connections")
SECRETS = ("api_key",)
# The management API's settings: it is not served through Ray (the Serve config says what every replica serves).
MANAGEMENT_SETTINGS = (
    "management_port",
    "management_host",
    "management_api_key",
    "readers_file",
    "export_dir",
    "export_timeout_s",
    "reader_defaults",
)
# Time for a stopping replica's lifespan to finish after its last request (the engines' threads).
SHUTDOWN_MARGIN_S = 5.0


def _differences(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            nested = _differences(value, default)
            if nested:
                out[key] = nested
        elif value != default:
            out[key] = value
    return out


def given_settings(settings: ServiceSettings, *, with_secrets: bool = True) -> dict[str, Any]:
    """The settings that differ from the defaults, groups with their artifact always, in config-file form.

    Less the proxy's settings (host, port, the `http` limits), the management API's settings, and
    (`with_secrets=False`) the API key.
    """
    data = msgspec.to_builtins(settings)
    groups = data.pop("groups")
    for key in (*PROXY_SETTINGS, *MANAGEMENT_SETTINGS, *(() if with_secrets else SECRETS)):
        data.pop(key)
    service_defaults = msgspec.to_builtins(ServiceSettings())
    service_defaults.pop("groups")
    given = _differences(data, service_defaults)
    group_defaults = msgspec.to_builtins(GroupConfig())
    given["groups"] = {
        name: {"artifact": values["artifact"], **_differences(values, group_defaults)}
        for name, values in groups.items()
    }
    return given


def ignored_management_settings(settings: ServiceSettings) -> list[str]:
    """The management API's settings given other than their defaults (what `slipstream ray` leaves out)."""
    defaults = msgspec.to_builtins(ServiceSettings())
    data = msgspec.to_builtins(settings)
    return [key for key in MANAGEMENT_SETTINGS if key != "reader_defaults" and data[key] != defaults[key]]


def unenforced_edge_settings(settings: ServiceSettings) -> list[str]:
    """The `http` limits given other than their defaults that Ray's proxy does not apply (docs/deploy.md)."""
    defaults = msgspec.to_builtins(HttpLimits())
    data = msgspec.to_builtins(settings.http)
    return [f"http.{key}" for key in UNENFORCED_EDGE_SETTINGS if data[key] != defaults[key]]


def proxy_http_options(settings: ServiceSettings) -> dict[str, Any]:
    """Ray Serve's `http_options`: where its proxy listens, and how long it keeps an idle connection.

    Ray takes the keep-alive timeout in whole seconds.
    """
    return {
        "host": settings.host,
        "port": settings.port,
        "keep_alive_timeout_s": math.ceil(settings.http.keep_alive_timeout_s),
    }


def resolve_settings(given: Mapping[str, Any], environ: Mapping[str, str]) -> ServiceSettings:
    """A replica's settings: `given` as a config file under `environ`'s SLIPSTREAM_* variables (ConfigError)."""
    return build_settings(config=given, environ=environ)


def logging_config(settings: ServiceSettings) -> dict[str, Any]:
    """Ray Serve's logging, as the service's: its level, and a line per request only with `access_log`
    (each costs CPU in the replica and the proxy)."""
    return {"log_level": settings.log_level.upper(), "enable_access_log": settings.access_log}


def deployment_options(settings: ServiceSettings, ray: RaySettings) -> dict[str, Any]:
    """The Serve deployment's options (the `deployments:` entry of the Serve config, less its name)."""
    options: dict[str, Any] = {}
    if ray.autoscale is None:
        options["num_replicas"] = ray.replicas
    else:
        low, high = ray.autoscale_bounds
        options["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": max(low, 1),
            "max_replicas": high,
            "metrics_interval_s": ray.metrics_interval_s,
            "look_back_period_s": ray.look_back_period_s,
            "upscale_delay_s": ray.upscale_delay_s,
            "downscale_delay_s": ray.downscale_delay_s,
            "policy": {
                "policy_function": POLICY_PATH,
                "policy_kwargs": {"target_queue_tokens": ray.target_queue_tokens},
            },
        }
    options.update(
        max_ongoing_requests=ray.max_ongoing_requests,
        max_queued_requests=ray.max_queued_requests,
        backpressure_config=dict(BACKPRESSURE),
        health_check_period_s=ray.health_check_period_s,
        health_check_timeout_s=ray.health_check_timeout_s,
        graceful_shutdown_wait_loop_s=1.0,
        graceful_shutdown_timeout_s=float(math.ceil(settings.shutdown_timeout_s + SHUTDOWN_MARGIN_S)),
        ray_actor_options={"num_cpus": ray.replica_cpus, "num_gpus": ray.replica_gpus},
        logging_config=logging_config(settings),
    )
    return options


def serve_config(settings: ServiceSettings, ray: RaySettings) -> dict[str, Any]:
    """The Ray Serve config file (`serve deploy`, KubeRay's serveConfigV2); the API key is left out."""
    return {
        "proxy_location": "EveryNode",
        "http_options": proxy_http_options(settings),
        "logging_config": logging_config(settings),
        "applications": [
            {
                "name": ray.app_name,
                "route_prefix": "/",
                "import_path": APP_BUILDER,
                "args": {"settings": given_settings(settings, with_secrets=False)},
                "deployments": [{"name": DEPLOYMENT_NAME, **deployment_options(settings, ray)}],
            }
        ],
    }
