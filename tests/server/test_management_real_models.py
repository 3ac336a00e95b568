"""The real `takeoff-client` managing `slipstream serve` on real exported tiny models, as a user would.

Every management method the client has (`get_readers`, `list_all_readers`,
`create_reader`, `get_reader_config`, `get_status`, `delete_reader`) against
the management API on the inference port + 1, then `classify` through the new
reader's group; a reader made from a `save_pretrained` directory (exported in a
child process); and a group of two readers from the config file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from takeoff_client import TakeoffClient
from takeoff_client.exceptions import TakeoffException
from tokenizers import Tokenizer

from slipstream.engines import load_engine
from tests.server.conftest import ServerProcess, free_port_pair, run_server

pytestmark = pytest.mark.timeout(300)

TEXTS = ["the lazy dog", "a quick brown fox jumps over it", "winter light"]


def serve_command(port: int, *arguments: str) -> list[str]:
    common = ["--port", str(port), "--host", "127.0.0.1", "--device", "cpu", "--variant", "fp32", "--log-level", "info"]
    return [sys.executable, "-m", "slipstream.cli", "serve", *arguments, *common]


def reference_logits(artifact: Path, texts: list[str]) -> np.ndarray:
    """Each text alone, unpadded, on the engine the server would choose for a CPU."""
    engine = load_engine(artifact, device="cpu")
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        types = np.zeros_like(ids) if "token_type_ids" in engine.input_names else None
        rows.append(engine.run(ids, np.ones_like(ids), types)[0])
    return np.stack(rows)


def wait_until_ready(client: TakeoffClient, reader_id: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        readers = {r["reader_id"]: r for rs in client.get_readers().values() for r in rs}
        reader = readers[reader_id]
        if reader["ready"]:
            return reader
        assert not reader["state"].startswith("failed"), reader["state"]
        assert time.monotonic() < deadline, reader
        time.sleep(0.1)


@pytest.fixture(scope="module")
def classifier_artifact(tiny_artifact_factory) -> Path:
    return tiny_artifact_factory("bert", 3, ("fp32",))


@pytest.fixture(scope="module")
def server(classifier_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("managed-real")
    port = free_port_pair()
    command = serve_command(port, str(classifier_artifact), "--export-dir", str(directory / "exports"))
    with run_server(command, port, directory / "server.log", management="default") as srv:
        yield srv


def test_takeoff_clients_management_calls_work_unchanged(server, classifier_artifact):
    client = TakeoffClient(base_url="http://127.0.0.1", port=server.port)  # management on port + 1
    readers = client.get_readers()
    assert client.list_all_readers() == readers
    [primary] = readers["primary"]
    for key in ("reader_id", "backend", "model_name", "model_type", "pids", "ready"):
        assert key in primary
    assert primary["ready"] and primary["model_name"] == str(classifier_artifact)

    created = client.create_reader(
        {"model_name": str(classifier_artifact), "device": "cpu", "consumer_group": "second", "max_batch_size": 4}
    )
    reader_id = created["reader_id"]
    assert wait_until_ready(client, reader_id)["consumer_group"] == "second"
    config = client.get_reader_config(reader_id)
    assert (config["model_name"], config["device"], config["max_batch_size"]) == (str(classifier_artifact), "cpu", 4)
    assert config["manifest"]["architecture"] == "BertForSequenceClassification"
    status = client.get_status()
    assert status["groups"]["second"]["ready"] and status["readers"] == 2

    served = client.classify(TEXTS, consumer_group="second")["result"]
    np.testing.assert_allclose(served, reference_logits(classifier_artifact, TEXTS), atol=1e-4)
    assert client.tokenize("the lazy dog", reader_id=reader_id)[0] == "[CLS]"

    client.delete_reader(reader_id)
    assert "second" not in client.get_readers()
    with pytest.raises(TakeoffException) as refused:
        client.classify(TEXTS, consumer_group="second")
    assert refused.value.status_code == 404
    assert client.classify("still served", consumer_group="primary")["result"]


def test_a_save_pretrained_directory_is_exported_in_a_child_process_then_served(server, tiny_model_factory):
    client = TakeoffClient(base_url="http://127.0.0.1", port=server.port)
    model_dir = tiny_model_factory("bert", 2)
    created = client.create_reader({"model_name": str(model_dir), "device": "cpu", "consumer_group": "exported"})
    assert created["state"] == "exporting"
    reader = wait_until_ready(client, created["reader_id"])
    assert reader["variant"] == "fp32"  # the server's --variant applies to readers added later too
    config = client.get_reader_config(created["reader_id"])
    artifact = Path(config["settings"]["artifact"])
    assert config["manifest"]["source_model"] == str(model_dir) and (artifact / "manifest.json").is_file()

    served = client.classify(TEXTS, consumer_group="exported")["result"]
    np.testing.assert_allclose(served, reference_logits(artifact, TEXTS), atol=1e-4)
    assert "exported" in server.log() and "torch" not in _imported_modules(server)

    client.delete_reader(created["reader_id"])
    assert not artifact.exists()  # exported for this reader, removed with it


def _imported_modules(server: ServerProcess) -> str:
    """The serving process's loaded shared objects, which name torch's if it was ever imported."""
    return Path(f"/proc/{server.process.pid}/maps").read_text()


def test_two_readers_of_one_group_from_the_config_file_both_take_work_and_answer_alike(classifier_artifact, tmp_path):
    config = tmp_path / "slipstream.toml"
    config.write_text(
        f'[groups.primary]\nartifact = "{classifier_artifact}"\n'
        "[[groups.primary.readers]]\ncpu.parallel_runs = 1\n"
        "[[groups.primary.readers]]\ncpu.parallel_runs = 1\nmax_batch_size = 4\n"
    )
    port = free_port_pair()
    with run_server(serve_command(port, "--config", str(config)), port, tmp_path / "server.log") as srv:
        readers = httpx.get(f"{srv.url}/info").json()["groups"]["primary"]["readers"]
        assert [r["batching"]["max_batch_size"] for r in readers] == [32, 4]
        first, second = (r["reader_id"] for r in readers)
        assert second == f"{first}-2"  # replicas of one model file
        answers = [httpx.post(f"{srv.url}/classify", json={"text": "the same text"}).json()["result"] for _ in range(8)]
        assert all(answer == answers[0] for answer in answers)
        np.testing.assert_allclose(answers[0], reference_logits(classifier_artifact, ["the same text"])[0], atol=1e-4)
        per_reader = [srv.metric("slipstream_items_computed_total", reader=reader_id) for reader_id in (first, second)]
        assert per_reader == [4, 4]
