"""`slipstream ray --print-config`, the Ray settings, and the settings each replica resolves (no cluster needed)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import msgspec
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from slipstream.cli import main
from slipstream.ray_serve.app import build
from slipstream.ray_serve.config import given_settings, resolve_settings, serve_config
from slipstream.ray_serve.settings import RaySettings
from slipstream.server.config import ConfigError, build_settings


def print_config(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["ray", *args, "--print-config"])
    return code, out.getvalue(), err.getvalue()


def test_print_config_is_a_valid_serve_config_with_our_policy_and_limits(tmp_path):
    code, out, err = print_config(
        "/opt/slipstream/artifact", "--autoscale", "1:4", "--max-batch-size", "16", "--port", "8000",
        "--replica-cpus", "2", "--api-key", "secret",
    )  # fmt: skip
    assert code == 0
    config = yaml.safe_load(out)
    ServeDeploySchema.model_validate(config)  # what `serve deploy` and KubeRay check
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000, "keep_alive_timeout_s": 5}
    (app,) = config["applications"]
    assert app["import_path"] == "slipstream.ray_serve.app:build" and app["route_prefix"] == "/"
    settings = app["args"]["settings"]
    assert settings == {"groups": {"primary": {"artifact": "/opt/slipstream/artifact", "max_batch_size": 16}}}
    assert "secret" not in out and "SLIPSTREAM_API_KEY" in err  # a secret never lands in a config file
    (deployment,) = app["deployments"]
    assert "num_replicas" not in deployment
    scaling = deployment["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 4)
    assert scaling["policy"] == {
        "policy_function": "slipstream.ray_serve.autoscaling:QueuedTokensPolicy",
        "policy_kwargs": {"target_queue_tokens": 16384},
    }
    assert deployment["max_ongoing_requests"] > 5  # Ray's default would starve the batcher
    assert deployment["backpressure_config"] == {"status_code": 429, "retry_after_s": 1.0}
    assert deployment["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.0}


def test_print_config_with_fixed_replicas_and_a_config_file(tmp_path):
    config_file = tmp_path / "slipstream.toml"
    config_file.write_text('[groups.a]\nartifact = "/models/a"\n[groups.b]\nartifact = "/models/b"\ndevice = "cuda"\n')
    code, out, _ = print_config("--config", str(config_file), "--replicas", "3", "--replica-gpus", "1")
    assert code == 0
    (app,) = yaml.safe_load(out)["applications"]
    assert app["args"]["settings"]["groups"] == {
        "a": {"artifact": "/models/a"},
        "b": {"artifact": "/models/b", "device": "cuda"},
    }
    assert app["deployments"][0]["num_replicas"] == 3
    assert app["deployments"][0]["ray_actor_options"]["num_gpus"] == 1.0


@pytest.mark.parametrize("bad", ["2:1", "0:0", "x:2", "3"])
def test_autoscale_must_be_min_colon_max(bad):
    with pytest.raises(ValueError, match="autoscale"):
        RaySettings(autoscale=bad)
    code, _, err = print_config("/a", "--autoscale", bad)
    assert code == 2 and "autoscale" in err


def test_ray_settings_come_from_the_environment_below_flags(monkeypatch):
    monkeypatch.setenv("SLIPSTREAM_REPLICAS", "5")
    monkeypatch.setenv("SLIPSTREAM_TARGET_QUEUE_TOKENS", "999")
    _, out, _ = print_config("/a", "--replicas", "2")
    (deployment,) = yaml.safe_load(out)["applications"][0]["deployments"]
    assert deployment["num_replicas"] == 2
    _, out, _ = print_config("/a", "--autoscale", "1:3")
    scaling = yaml.safe_load(out)["applications"][0]["deployments"][0]["autoscaling_config"]
    assert scaling["policy"]["policy_kwargs"] == {"target_queue_tokens": 999}


def test_a_replica_resolves_the_given_settings_as_a_config_file_under_its_environment(tmp_path):
    settings = build_settings(
        artifact="/models/m", cli_service={"tokenizer_threads": 2}, cli_group={"max_batch_size": 8}, environ={}
    )
    given = given_settings(settings)
    resolved = resolve_settings(given, {})  # what `slipstream ray` hands its replicas: final
    assert (resolved.groups, resolved.tokenizer_threads) == (settings.groups, 2)
    # From a Serve config, the node's variables apply over it, as over a config file (an API key from a secret).
    env = {"SLIPSTREAM_API_KEY": "from-secret", "SLIPSTREAM_MAX_BATCH_SIZE": "64"}
    resolved = resolve_settings(msgspec.json.decode(msgspec.json.encode(given)), env)
    assert resolved.api_key == "from-secret"
    assert resolved.tokenizer_threads == 2 and resolved.groups["primary"].max_batch_size == 64
    with pytest.raises(ConfigError, match="max_batch_size"):
        resolve_settings({"groups": {"g": {"artifact": "/m", "max_batch_size": 0}}}, {})


def test_the_serve_config_builder_takes_the_printed_args(tmp_path):
    settings = build_settings(artifact=str(tmp_path), environ={})
    args = serve_config(settings, RaySettings())["applications"][0]["args"]
    assert build(args) is not None  # builds the application without a cluster
    with pytest.raises(ConfigError, match="unknown args"):
        build({**args, "replicas": 2})


def test_without_an_artifact_slipstream_ray_says_which(tmp_path, capsys):
    code = main(["ray", str(tmp_path / "missing")])
    assert code == 2 and "missing" in capsys.readouterr().err


def test_given_settings_keep_only_what_differs_from_the_defaults_and_leave_the_management_api_out(capsys):
    settings = build_settings(artifact=str(Path("/m")), environ={})
    assert given_settings(settings) == {"groups": {"primary": {"artifact": "/m"}}}
    code, out, err = print_config("/m", "--management-port", "9000", "--readers-file", "/tmp/r.json")
    assert code == 0 and "management_port" not in out and "readers_file" not in out
    assert "not served through Ray; ignoring management_port, readers_file" in err


def test_the_edge_limits_are_the_proxys_and_those_it_cannot_apply_are_named():
    code, out, err = print_config(
        "/m", "--http.keep-alive-timeout-s", "2.5", "--http.body-timeout-s", "4",
        "--http.header-timeout-s", "3", "--http.max-connections", "100",
    )  # fmt: skip
    assert code == 0
    config = yaml.safe_load(out)
    assert config["http_options"]["keep_alive_timeout_s"] == 3  # Ray takes whole seconds
    assert "http" not in config["applications"][0]["args"]["settings"]  # the replicas do not listen
    assert "no header deadline and no connection cap; ignoring http.header_timeout_s, http.max_connections" in err
    code, _, err = print_config("/m", "--http.body-timeout-s", "4")
    assert code == 0 and "ignoring" not in err  # the proxy middleware applies the body deadline


def test_the_ray_settings_table_in_the_deployment_guide_is_generated_from_the_definitions():
    from slipstream.ray_serve.settings_reference import DEFAULT_DOC, updated

    document = DEFAULT_DOC.read_text()
    assert updated(document) == document, "run `python -m slipstream.ray_serve.settings_reference`"
