"""`slipstream ray`: deploy on Ray Serve, stay in the foreground, drain on SIGTERM or Ctrl-C.

Start (or join) Ray, start Serve's HTTP proxy on the service's host and port, deploy
the application and wait until every replica has warmed up. On a signal: delete the
application (Ray stops routing to the replicas, lets each finish what it holds, then
runs its shutdown, which drains its batchers), stop Serve, and stop the Ray this
command started (a joined cluster keeps running).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType

import ray
from ray import serve

from slipstream.batching.group import EngineFactory
from slipstream.ray_serve.app import application
from slipstream.ray_serve.config import logging_config, proxy_http_options
from slipstream.ray_serve.proxy import CALLBACK_ENV, CALLBACK_PATH
from slipstream.ray_serve.settings import RaySettings
from slipstream.server.config import settings_as_toml_like
from slipstream.server.settings import ServiceSettings
from slipstream.settings import ENV_PREFIX

log = logging.getLogger("slipstream.ray_serve")


def connect(settings: ServiceSettings, ray_settings: RaySettings) -> bool:
    """Join the named cluster (or RAY_ADDRESS), else start a local Ray; True when this process started it.

    Ray's proxy takes its middleware from its environment only: a local Ray inherits
    it from this process; a cluster started otherwise sets it on its nodes.
    """
    address = ray_settings.address or os.environ.get("RAY_ADDRESS")
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    if address:
        log.info(
            "joining %s: its nodes' proxies give Ray's own errors Slipstream's JSON body, and retry a request whose "
            "replica died, only when the nodes set %s=%s; if Serve already runs there, its proxies keep their port",
            address,
            CALLBACK_ENV,
            CALLBACK_PATH,
        )
        ray.init(address=address, logging_level=level, log_to_driver=True)
        return False
    os.environ[CALLBACK_ENV] = CALLBACK_PATH
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local Ray reports nothing home unless asked to
    # Ray lowers its workers' priority (nice 15) by default; here they are the server, and should
    # compete for the CPU as `slipstream serve` does.
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ[ENV_PREFIX + "PROXY_RETRIES"] = str(ray_settings.proxy_retries)
    os.environ[ENV_PREFIX + "MAX_BODY_BYTES"] = str(settings.max_body_bytes)
    os.environ[ENV_PREFIX + "HTTP__BODY_TIMEOUT_S"] = str(settings.http.body_timeout_s)
    ray.init(
        address="local",
        num_cpus=ray_settings.ray_num_cpus,
        object_store_memory=ray_settings.ray_object_store_bytes,
        include_dashboard=False,
        logging_level=level,
        log_to_driver=True,
    )
    return True


class _Stopped(Exception):
    """A signal arrived while Ray or the deployment was still starting."""


class _Signals:
    """SIGTERM and SIGINT, from the start: during start-up they abort it; after it, they end the wait."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._event = threading.Event()
        self._starting = True
        self.install()

    def install(self) -> None:
        """(Again) make these the handlers: `ray.init` installs its own, which exit at once."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already stopping
        self.received = sig
        self._event.set()
        if self._starting:
            raise _Stopped(sig)

    def wait(self) -> int:
        self._starting = False
        self._event.wait()
        assert self.received is not None
        return self.received


def run(settings: ServiceSettings, ray_settings: RaySettings, *, engine_factory: EngineFactory | None = None) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    print("slipstream ray: effective configuration\n" + settings_as_toml_like(settings), file=sys.stderr, flush=True)
    signals = _Signals()
    started = False
    try:
        started = connect(settings, ray_settings)
        signals.install()
        serve.start(
            proxy_location="EveryNode",
            http_options=proxy_http_options(settings),
            logging_config=logging_config(settings),
        )
        low, high = ray_settings.autoscale_bounds
        replicas = f"{low} to {high} replicas (autoscaled)" if ray_settings.autoscale else f"{low} replicas"
        log.info("deploying %s: %s; waiting until every replica has warmed up", ray_settings.app_name, replicas)
        serve.run(
            application(settings, ray_settings, engine_factory=engine_factory),
            name=ray_settings.app_name,
            route_prefix="/",
            blocking=False,
        )
        log.info("serving on http://%s:%d through Ray Serve", settings.host, settings.port)
        sig = signals.wait()
        log.info("%s: draining the replicas", signal.Signals(sig).name)
        serve.delete(ray_settings.app_name)
    except _Stopped as stopped:
        log.info("%s during start-up: stopping", signal.Signals(stopped.args[0]).name)
        if not started and ray.is_initialized():
            with contextlib.suppress(Exception):  # not deployed yet, or already gone
                serve.delete(ray_settings.app_name)
    finally:
        if started and ray.is_initialized():  # a joined cluster keeps its Serve and its other applications
            serve.shutdown()
            ray.shutdown()
    log.info("stopped")
    return 0
