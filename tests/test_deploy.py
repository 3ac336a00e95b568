"""deploy/, validated offline: YAML style (yamllint), Kubernetes schemas (kubernetes-validate), and what the
manifests promise: probes, drain, resources, the autoscaling signal, and a serveConfigV2 that is exactly what
`slipstream ray --print-config` writes."""

from __future__ import annotations

import io
import re
import shlex
import tomllib
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from yamllint import linter
from yamllint.config import YamlLintConfig

from slipstream.cli import main
from slipstream.ray_serve.proxy import CALLBACK_ENV, CALLBACK_PATH
from slipstream.ray_serve.settings import RaySettings
from slipstream.server.metrics import ServiceMetrics

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
MANIFESTS = sorted(path for path in DEPLOY.rglob("*.yaml") if not path.name.startswith("."))
# The oldest Kubernetes still widely run, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CORE_API_GROUPS = ("v1", "apps/v1", "policy/v1", "autoscaling/v2")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources(kind: str) -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path) if doc.get("kind") == kind]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec["containers"])


def test_there_are_manifests_for_each_way_to_deploy():
    kinds = {doc["kind"] for path in MANIFESTS for doc in documents(path)}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "RayService"} <= kinds


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yamllint_finds_nothing(path):
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))
    problems = list(linter.run(path.read_text(), config, str(path)))
    assert not problems, "\n".join(f"{path}:{p.line}:{p.column} {p.level} {p.message}" for p in problems)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_resource_validates_strictly(version):
    checked = 0
    for path in MANIFESTS:
        for doc in documents(path):
            if doc["apiVersion"] in CORE_API_GROUPS:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            else:  # a custom resource: its pod templates are Kubernetes' own
                assert doc["kind"] == "RayService"
                for template in ray_pod_templates(doc):
                    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
                    kubernetes_validate.validate({**pod_template, "template": template}, version, strict=True)
                    checked += 1
    assert checked >= 12


def test_plain_deployments_probe_drain_and_request_resources():
    for deployment in resources("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = containers(pod)
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        env = {item["name"]: item.get("value") for item in container["env"]}
        drain_s = float(env["SLIPSTREAM_SHUTDOWN_TIMEOUT_S"])
        assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain_s
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_gpu_variants_request_a_gpu_and_keep_tensorrt_engines():
    (gpu,) = [d for d in resources("Deployment") if "gpu" in d["metadata"]["name"]]
    (container,) = containers(gpu["spec"]["template"]["spec"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SLIPSTREAM_TENSORRT__CACHE_DIR"] in mounts
    (ray_gpu,) = [r for r in resources("RayService") if "gpu" in r["metadata"]["name"]]
    (worker,) = ray_gpu["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert containers(worker["template"]["spec"])[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    deployment = serve_config_of(ray_gpu)["applications"][0]["deployments"][0]
    assert deployment["ray_actor_options"]["num_gpus"] == 1


def test_the_autoscalers_scale_on_queued_tokens_with_rays_target():
    metric_names = {metric.name for metric in ServiceMetrics().registry.collect()}
    assert "slipstream_queue_tokens" in metric_names
    for hpa in resources("HorizontalPodAutoscaler"):
        (metric,) = hpa["spec"]["metrics"]
        assert metric["pods"]["metric"]["name"] == "slipstream_queue_tokens"
        assert int(metric["pods"]["target"]["averageValue"]) == RaySettings().target_queue_tokens
    (adapter,) = resources("ConfigMap")
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == "slipstream_queue_tokens" and "slipstream_queue_tokens" in rule["seriesQuery"]


def ray_pod_templates(ray_service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = ray_service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"], *(group["template"] for group in cluster["workerGroupSpecs"])]


def serve_config_of(ray_service: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(ray_service["spec"]["serveConfigV2"])
    return config


@pytest.mark.parametrize("path", sorted((DEPLOY / "ray").glob("*.yaml")), ids=lambda p: p.name)
def test_each_rayservice_carries_what_slipstream_ray_print_config_writes(path):
    (ray_service,) = documents(path)
    assert (ray_service["apiVersion"], ray_service["kind"]) == ("ray.io/v1", "RayService")
    config = serve_config_of(ray_service)
    ServeDeploySchema.model_validate(config)
    command = re.search(r"^#\s+slipstream ray (.+ --print-config)$", path.read_text(), re.MULTILINE)
    assert command, "the manifest names the command its serveConfigV2 comes from"
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ray", *shlex.split(command.group(1))]) == 0
    assert config == yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("path", sorted((DEPLOY / "ray").glob("*.yaml")), ids=lambda p: p.name)
def test_each_ray_node_runs_our_image_and_proxy_middleware(path):
    (ray_service,) = documents(path)
    cluster = ray_service["spec"]["rayClusterConfig"]
    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    assert pinned == [f"ray[serve]=={cluster['rayVersion']}"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for template in ray_pod_templates(ray_service):
        for container in containers(template["spec"]):
            assert container["image"].startswith("slipstream:") and container["image"].endswith("-ray")
            env = {item["name"]: item.get("value") for item in container["env"]}
            assert env[CALLBACK_ENV] == CALLBACK_PATH
            assert container["resources"]["requests"]["cpu"]
    deployment = serve_config_of(ray_service)["applications"][0]["deployments"][0]
    for group in cluster["workerGroupSpecs"]:
        worker = containers(group["template"]["spec"])[0]
        assert float(worker["resources"]["requests"]["cpu"]) >= deployment["ray_actor_options"]["num_cpus"]
        assert worker["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        assert group["maxReplicas"] >= deployment["autoscaling_config"]["max_replicas"]
