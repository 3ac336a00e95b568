"""The OpenAPI schema tells the truth: schemathesis, with all its checks, against a live server.

schemathesis reads /docs/openapi.json and sends requests the schema calls valid
(they must be accepted) and invalid (they must be refused with a 4xx), checking
every response's status, content type, headers and body against the schema, and
that a route documented as needing the API key refuses a request without it.
Its configuration (tests/server/schemathesis.toml) says where it cannot know
something about us, and why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.batching.fake_artifact import write_fake_artifact
from tests.server.conftest import fake_server_command, free_port, run_server

pytestmark = pytest.mark.timeout(300)

API_KEY = "schema-contract"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Enough examples per route to cover every field's shapes, bounded to about a
# minute on two cores; a fixed seed makes a failure reproducible (`--seed`).
MAX_EXAMPLES = 60
SEED = 16


@pytest.fixture(scope="module")
def reranker_server(tmp_path_factory: pytest.TempPathFactory):
    # A one-label model, as `slipstream serve` serves by default: every route can
    # serve it (/rerank needs one label), so a schema-valid request is never refused
    # for which model the group holds. 512 tokens, so generated texts fit.
    directory = tmp_path_factory.mktemp("schema-contract")
    artifact = write_fake_artifact(directory / "reranker", labels=["relevance"], max_sequence_length=512)
    port = free_port()
    command = fake_server_command(artifact, port, "--service", f"api_key={API_KEY}")
    with run_server(command, port, directory / "server.log") as server:
        yield server


def test_schemathesis_finds_nothing(reranker_server, tmp_path):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    info = httpx.get(f"{reranker_server.url}/info", headers=auth).json()
    reader_id = info["groups"]["primary"]["reader_id"]
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{reranker_server.url}/docs/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--header",
        f"Authorization: Bearer {API_KEY}",
        "--request-timeout",
        "30",
        "--continue-on-failure",
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "SLIPSTREAM_READER_ID": reader_id},
        capture_output=True,
        text=True,
        timeout=280,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report + "\nserver log:\n" + reranker_server.log()
    # Every operation tested, none starved of data (a route answering only 404 would be left untested).
    assert "No issues found" in report and "Missing test data" not in report, report
