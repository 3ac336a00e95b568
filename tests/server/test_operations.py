"""Auth, start-up errors, readiness and the shutdown gate."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from slipstream.server.app import create_app
from slipstream.server.config import build_settings
from tests.batching.fakes import RecordingEngine
from tests.server.conftest import REPO_ROOT, fake_server_command, free_port, run_server

pytestmark = pytest.mark.timeout(120)


def test_bearer_auth_guards_every_route_but_health_and_ready(fake_classifier_artifact, tmp_path):
    port = free_port()
    command = fake_server_command(fake_classifier_artifact, port, "--service", "api_key=s3cret")
    with run_server(command, port, tmp_path / "auth.log") as server:
        url = server.url
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/ready").status_code == 200
        for method, path, body in [
            ("POST", "/classify", {"text": "a"}),
            ("POST", "/predict", {"inputs": "a"}),
            ("POST", "/rerank", {"query": "q", "texts": ["a"]}),
            ("POST", "/tokenize/x", {"text": "a"}),
            ("GET", "/info", None),
            ("GET", "/metrics", None),
            ("GET", "/docs/openapi.json", None),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                response = httpx.request(method, url + path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.json()["error_type"] == "unauthorized"
        ok = httpx.post(f"{url}/classify", json={"text": "a"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slipstream.cli", "serve", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serving_the_default_model_before_it_is_built_says_how_to_build_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "slipstream.cli", "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "make serve" in result.stderr and "build-default" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_directory_that_is_not_an_artifact_is_a_one_line_error(tmp_path):
    result = run_cli(str(tmp_path), "--port", str(free_port()))
    assert result.returncode == 2
    assert "not a Slipstream artifact" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(str(tmp_path), "--port", "99999")
    assert result.returncode == 2 and "port" in result.stderr


def _fake_factory(settings, manifest):
    return RecordingEngine([8, 16, 32, manifest.max_sequence_length], num_labels=manifest.num_labels)


def test_ready_waits_for_warm_up_and_shutdown_refuses_new_work(fake_classifier_artifact: Path):
    settings = build_settings(artifact=str(fake_classifier_artifact), environ={})
    app = create_app(settings, engine_factory=_fake_factory)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.post("/classify", json={"text": "a"}).status_code == 200
        app.state.service.begin_shutdown()
        refused = client.post("/classify", json={"text": "a"})
        assert refused.status_code == 503 and refused.json()["error_type"] == "unavailable"
        assert client.get("/ready").status_code == 503
        assert client.get("/health").status_code == 200
