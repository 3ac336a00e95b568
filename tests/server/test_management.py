"""The management API over real HTTP, against `slipstream serve` with the recording engine.

Readers are added, listed, described and removed while the server serves;
what each step does to requests, errors and the readers file is checked here.
The real `takeoff-client` against real exported models: test_management_real_models.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from slipstream.server.config import build_settings
from tests.batching.fake_artifact import write_fake_artifact
from tests.server.conftest import ServerProcess, fake_server_command, free_port, free_port_pair, run_server

pytestmark = pytest.mark.timeout(300)


@dataclass
class Managed:
    server: ServerProcess
    management: httpx.Client
    inference: httpx.Client

    def readers(self) -> dict[str, dict]:
        groups = self.management.get("/reader_groups").json()
        return {reader["reader_id"]: reader for readers in groups.values() for reader in readers}

    def wait_until(self, reader_id: str, *states: str, timeout_s: float = 60) -> dict:
        """The reader's listing once its state starts with one of `states`."""
        deadline = time.monotonic() + timeout_s
        while True:
            reader = self.readers().get(reader_id)
            if reader is not None and reader["state"].startswith(states):
                return reader
            assert time.monotonic() < deadline, f"{reader_id} never got to {states}: {reader}"
            time.sleep(0.05)

    def add(self, **config: object) -> dict:
        response = self.management.post("/reader", json=config)
        assert response.status_code == 201, response.text
        return response.json()

    def classify(self, group: str, text: str = "hello") -> httpx.Response:
        return self.inference.post("/classify", json={"text": text, "consumer_group": group})


@contextmanager
def managed_server(artifact: Path, log_dir: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[Managed]:
    port = free_port_pair()
    command = fake_server_command(artifact, port, "--service", "log_level=info", *flags)
    with (
        run_server(command, port, log_dir / f"server-{port}.log", env=env, management=port + 1) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{port + 1}", timeout=30) as management,
        httpx.Client(base_url=server.url, timeout=30) as inference,
    ):
        yield Managed(server, management, inference)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def managed(
    fake_classifier_artifact: Path, exports: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Managed]:
    log_dir = tmp_path_factory.mktemp("management")
    flags = ("--service", "max_readers=4", "--service", f"export_dir={exports}")
    with managed_server(fake_classifier_artifact, log_dir, *flags) as server:
        yield server


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return str(body["error"])


class TestListing:
    def test_readers_are_listed_by_consumer_group_with_takeoffs_fields(self, managed, fake_classifier_artifact):
        groups = managed.management.get("/reader_groups").json()
        assert list(groups) == ["primary"]
        [reader] = groups["primary"]
        assert reader["reader_id"] == managed.inference.get("/info").json()["groups"]["primary"]["reader_id"]
        assert reader["model_name"] == str(fake_classifier_artifact)
        assert (reader["backend"], reader["model_type"], reader["device"]) == ("onnxruntime", "CLASSIFICATION", "cpu")
        assert reader["ready"] is True and reader["state"] == "ready" and reader["origin"] == "config"
        assert reader["pids"] == [managed.server.process.pid]

    def test_status_has_the_version_uptime_and_every_reader(self, managed):
        status = managed.management.get("/status").json()
        assert status["version"] and status["uptime_s"] > 0 and status["ready"] is True
        [reader] = status["groups"]["primary"]["readers"]
        assert (reader["state"], reader["device"], reader["queue_items"]) == ("ready", "cpu", 0)

    def test_a_readers_config_is_its_effective_settings_and_manifest(self, managed):
        reader_id = next(iter(managed.readers()))
        config = managed.management.get(f"/config/{reader_id}").json()
        assert config["consumer_group"] == "primary" and config["settings"]["max_items_per_request"] == 256
        assert config["manifest"]["labels"] == ["neg", "neu", "pos"]
        assert config["max_sequence_length"] == 64 and config["config"] == {}

    def test_the_management_api_has_its_own_openapi_page(self, managed):
        schema = managed.management.get("/docs/openapi.json").json()
        assert set(schema["paths"]) == {
            "/reader_groups",
            "/reader",
            "/reader/{reader_id}",
            "/config/{reader_id}",
            "/status",
        }
        body = schema["components"]["schemas"]["ReaderConfig"]["properties"]
        assert {"model_name", "consumer_group", "max_batch_size", "batch_duration_millis", "cpu"} <= set(body)
        assert managed.management.get("/docs").status_code == 200


class TestAddingAndRemoving:
    def test_a_new_reader_serves_its_group_once_ready_then_goes_away(self, managed, fake_reranker_artifact):
        created = managed.add(model_name=str(fake_reranker_artifact), consumer_group="reranker", device="cpu")
        reader_id = created["reader_id"]
        assert created["consumer_group"] == "reranker" and created["ignored_fields"] == []
        managed.wait_until(reader_id, "ready")
        assert managed.classify("reranker").status_code == 200
        info = managed.inference.get("/info").json()["groups"]["reranker"]
        assert [r["reader_id"] for r in info["readers"]] == [reader_id]
        tokens = managed.inference.post(f"/tokenize/{reader_id}", json={"text": "hello world"}).json()
        assert tokens["tokens"] == ["[CLS]", "hello", "world", "[SEP]"]
        assert managed.server.metric("slipstream_items_computed_total", group="reranker", reader=reader_id) == 1

        assert managed.management.delete(f"/reader/{reader_id}").status_code == 204
        assert reader_id not in managed.readers()
        assert_error(managed.classify("reranker"), 404, "unknown consumer_group 'reranker'", "primary")
        assert f'reader="{reader_id}"' not in managed.inference.get("/metrics").text

    def test_takeoffs_fields_that_do_not_apply_are_accepted_ignored_and_listed(self, managed, fake_reranker_artifact):
        created = managed.add(
            model_name=str(fake_reranker_artifact),
            consumer_group="takeoff-style",
            device="cpu",
            tensor_parallel=2,
            quant_type="awq",
            backend="hf",
            max_batch_size=4,
            batch_duration_millis=5,
            max_sequence_length=32,
            cuda_visible_devices="1",
        )
        assert created["ignored_fields"] == ["backend", "quant_type", "tensor_parallel"]
        config = managed.management.get(f"/config/{created['reader_id']}").json()
        assert (config["max_batch_size"], config["batch_duration_millis"], config["max_sequence_length"]) == (4, 5, 32)
        assert config["settings"]["cuda"]["device_id"] == 1
        assert config["config"]["tensor_parallel"] == 2
        managed.wait_until(created["reader_id"], "ready")
        long_text = "word " * 100
        result = managed.classify("takeoff-style", long_text).json()["result"]
        assert len(result) == 1  # truncated to 32 tokens, served
        assert managed.management.delete(f"/reader/{created['reader_id']}").status_code == 204

    def test_a_second_reader_in_a_group_shares_its_work(self, managed, fake_classifier_artifact):
        created = managed.add(model_name=str(fake_classifier_artifact), consumer_group="primary")
        managed.wait_until(created["reader_id"], "ready")
        answers = {json.dumps(managed.classify("primary", "the same text").json()) for _ in range(10)}
        assert len(answers) == 1
        per_reader = [
            managed.server.metric("slipstream_items_computed_total", group="primary", reader=reader_id)
            for reader_id in managed.readers()
        ]
        assert len(per_reader) == 2 and all(items >= 4 for items in per_reader), per_reader
        assert managed.management.delete(f"/reader/{created['reader_id']}").status_code == 204
        assert managed.classify("primary").status_code == 200

    def test_past_max_readers_is_409(self, managed, fake_reranker_artifact):
        added = [managed.add(model_name=str(fake_reranker_artifact), consumer_group="many") for _ in range(3)]
        assert_error(
            managed.management.post("/reader", json={"model_name": str(fake_reranker_artifact)}), 409, "max_readers"
        )
        for reader in added:
            assert managed.management.delete(f"/reader/{reader['reader_id']}").status_code == 204

    def test_a_model_whose_labels_differ_from_its_groups_is_409(self, managed, fake_reranker_artifact):
        response = managed.management.post(
            "/reader", json={"model_name": str(fake_reranker_artifact), "consumer_group": "primary"}
        )
        assert_error(response, 409, "labels", "consumer_group")


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "fragments"),
        [
            ({"model_name": "x", "foo": 1, "bar": 2}, ["unknown fields: bar, foo"]),
            ({"model_name": "x", "artifact": "/a"}, ["unknown fields: artifact", "model_name"]),
            ({"consumer_group": "g"}, ["model_name"]),
            ({"model_name": "/no/such/dir"}, ["no such directory"]),
            ({"model_name": "x", "max_batch_size": "four"}, ["max_batch_size", "int"]),
            ({"model_name": "x", "max_batch_size": 0}, ["max_batch_size", ">= 1"]),
            ({"model_name": "x", "cpu": {"parallel_runs": -1}}, ["parallel_runs"]),
            ({"model_name": "x", "device": "tpu"}, ["device"]),
            ({"model_name": "x", "consumer_group": "a/b"}, ["consumer_group"]),
            ({"model_name": "x", "cuda_visible_devices": "0,1"}, ["cuda_visible_devices", "one GPU"]),
        ],
    )
    def test_an_invalid_reader_config_is_422_naming_the_field(self, managed, body, fragments):
        assert_error(managed.management.post("/reader", json=body), 422, *fragments)

    def test_a_path_that_is_not_an_artifact_or_model_is_422_with_the_reason(self, managed, tmp_path):
        (tmp_path / "notes").mkdir()
        assert_error(
            managed.management.post("/reader", json={"model_name": str(tmp_path / "notes")}),
            422,
            "neither a Slipstream artifact",
        )
        (tmp_path / "file.txt").write_text("x")
        assert_error(
            managed.management.post("/reader", json={"model_name": str(tmp_path / "file.txt")}), 422, "is a file"
        )

    def test_buckets_out_of_order_and_a_missing_variant_are_422(self, managed, fake_classifier_artifact):
        artifact = str(fake_classifier_artifact)
        body = {"model_name": artifact, "buckets": [32, 16]}
        assert_error(managed.management.post("/reader", json=body), 422, "ascending")
        body = {"model_name": artifact, "variant": "fp16"}
        assert_error(managed.management.post("/reader", json=body), 422, "variant", "fp16")

    def test_an_unknown_reader_is_404(self, managed):
        assert_error(managed.management.delete("/reader/nope"), 404, "unknown reader_id 'nope'")
        assert_error(managed.management.get("/config/nope"), 404, "unknown reader_id")
        assert_error(managed.inference.post("/tokenize/nope", json={"text": "a"}), 404, "unknown reader_id")

    def test_a_body_that_is_not_json_is_400(self, managed):
        response = managed.management.post(
            "/reader", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_error(response, 400)


@dataclass
class Traffic:
    """Clients sending one request after another to one group, each outcome with its times."""

    inference_url: str
    group: str
    clients: int = 3
    outcomes: list[tuple[float, float, int]] = field(default_factory=list)  # (sent, answered, status)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for number in range(self.clients):
            thread = threading.Thread(target=self._send, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _send(self, number: int) -> None:
        with httpx.Client(base_url=self.inference_url, timeout=30) as client:
            sequence = 0
            while not self._stop.is_set():
                sequence += 1
                sent = time.monotonic()
                body = {"text": f"client {number} request {sequence}", "consumer_group": self.group}
                status = client.post("/classify", json=body).status_code
                self.outcomes.append((sent, time.monotonic(), status))

    def stop(self) -> list[tuple[float, float, int]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return sorted(self.outcomes)

    def wait_for(self, count: int, status: int = 200, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(1 for *_, s in self.outcomes if s == status) < count:
            assert time.monotonic() < deadline, f"no {count} x {status}: {self.outcomes[-5:]}"
            time.sleep(0.01)


def test_adding_using_and_removing_a_group_under_load(fake_classifier_artifact, fake_reranker_artifact, tmp_path):
    """While clients send steady traffic to one group, a second model is added, used and removed.

    The first group sees only 200s. The removed group's traffic sees 200s until the removal
    starts, then 503s while its reader drains (its queued and running work still answers 200),
    and 404s once it is gone.
    """
    with managed_server(fake_classifier_artifact, tmp_path, "--engine-delay-s", "0.05") as managed:
        steady = Traffic(managed.server.url, "primary").start()
        steady.wait_for(5)
        created = managed.add(model_name=str(fake_reranker_artifact), consumer_group="second", device="cpu")
        managed.wait_until(created["reader_id"], "ready")
        second = Traffic(managed.server.url, "second", clients=4).start()
        second.wait_for(10)
        delete_sent = time.monotonic()
        assert managed.management.delete(f"/reader/{created['reader_id']}").status_code == 204
        delete_answered = time.monotonic()
        second.wait_for(5, status=404)
        steady.wait_for(len(steady.outcomes) + 5)
        removed, first = second.stop(), steady.stop()

    assert {status for *_, status in first} == {200}
    assert {status for *_, status in removed} <= {200, 503, 404}
    for sent, answered, status in removed:
        if status == 503:
            assert answered > delete_sent
        if status == 404:
            assert sent > delete_sent
        if sent > delete_answered:
            assert status == 404
    # The drain let the work it held finish: requests sent before the removal, answered 200 after it began.
    assert any(sent < delete_sent < answered and status == 200 for sent, answered, status in removed)


def test_a_failing_export_or_load_does_not_disturb_serving(managed, exports, tmp_path):
    headless = tmp_path / "bert-without-a-head"
    headless.mkdir()
    (headless / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    broken = write_fake_artifact(tmp_path / "broken", labels=["a", "b", "c"])
    (broken / "tokenizer.json").unlink()  # found out only when it loads
    steady = Traffic(managed.server.url, "primary", clients=1).start()
    steady.wait_for(5)
    assert_error(managed.management.post("/reader", json={"model_name": str(tmp_path / "nowhere")}), 422)
    assert_error(
        managed.management.post("/reader", json={"model_name": str(headless)}), 422, "no sequence-classification head"
    )
    # Offline (as every test is), the hub cannot be reached: found out by the export, in its own process.
    unexportable = managed.add(model_name="no-such-org/no-such-model", consumer_group="hub", device="cpu")
    assert unexportable["state"] == "exporting" and len(unexportable["pids"]) in (1, 2)
    assert managed.inference.get("/ready").status_code == 200  # readers added later never gate readiness
    unloadable = managed.add(model_name=str(broken), consumer_group="broken")
    not_loaded = managed.wait_until(unloadable["reader_id"], "failed")
    assert not_loaded["ready"] is False and "No such file" in not_loaded["state"], not_loaded
    failed = managed.wait_until(unexportable["reader_id"], "failed", timeout_s=180)
    assert "no-such-org/no-such-model" in failed["state"] and "hub" in failed["state"]
    assert failed["pids"] == [managed.server.process.pid]  # the export's process is gone
    assert_error(managed.classify("hub"), 503, "no ready reader", "failed")
    steady.wait_for(len(steady.outcomes) + 5)
    for reader in (unexportable, unloadable):
        assert managed.management.delete(f"/reader/{reader['reader_id']}").status_code == 204
    assert not (exports / unexportable["reader_id"]).exists()
    assert {status for *_, status in steady.stop()} == {200}


def test_readers_added_through_the_api_come_back_after_a_restart(
    fake_classifier_artifact, fake_reranker_artifact, tmp_path
):
    readers_file = tmp_path / "readers.json"
    flags = ("--service", f"readers_file={readers_file}")
    with managed_server(fake_classifier_artifact, tmp_path, *flags) as managed:
        created = managed.add(model_name=str(fake_reranker_artifact), consumer_group="kept", access_token="secret")
        managed.wait_until(created["reader_id"], "ready")
    saved = json.loads(readers_file.read_text())
    assert [reader["reader_id"] for reader in saved] == [created["reader_id"]]
    assert "secret" not in readers_file.read_text()

    with managed_server(fake_classifier_artifact, tmp_path, *flags) as managed:
        assert managed.readers()[created["reader_id"]]["state"] == "ready"  # /ready waited for it
        assert managed.classify("kept").status_code == 200
        assert managed.management.delete(f"/reader/{created['reader_id']}").status_code == 204
    assert json.loads(readers_file.read_text()) == []  # the next start has none


def test_the_management_api_has_its_own_key_or_the_servers(fake_classifier_artifact, tmp_path):
    keys = ("--service", "api_key=inference-key", "--service", "management_api_key=management-key")
    with managed_server(fake_classifier_artifact, tmp_path, *keys) as managed:
        assert managed.management.get("/reader_groups").status_code == 401
        wrong = {"Authorization": "Bearer inference-key"}
        assert managed.management.get("/reader_groups", headers=wrong).status_code == 401
        right = {"Authorization": "Bearer management-key"}
        assert managed.management.get("/reader_groups", headers=right).status_code == 200
        assert managed.inference.get("/info", headers=right).status_code == 401
        assert managed.inference.get("/info", headers=wrong).status_code == 200
    # Without a key of its own, the management API takes the server's.
    assert build_settings(cli_service={"api_key": "only-key"}, environ={}).management_key == "only-key"


def test_management_port_0_serves_no_management_api(fake_classifier_artifact, tmp_path):
    port = free_port_pair()
    command = fake_server_command(fake_classifier_artifact, port, "--service", "management_port=0")
    with run_server(command, port, tmp_path / "server.log", management="default"), pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port + 1}/status")


def test_a_management_port_in_use_fails_the_start(fake_classifier_artifact, tmp_path):
    import socket

    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        command = fake_server_command(fake_classifier_artifact, port)
        log = tmp_path / "server.log"
        with pytest.raises(RuntimeError, match="server exited"), run_server(command, port, log, management=busy):
            pass
        assert "address already in use" in log.read_text()


def test_a_restart_loads_an_exported_model_without_exporting_it_again(fake_classifier_artifact, tmp_path):
    exported = write_fake_artifact(tmp_path / "exports" / "hub-0123456789ab", labels=["x", "y", "z"])
    readers_file = tmp_path / "readers.json"
    readers_file.write_text(
        json.dumps(
            [
                {  # offline, exporting this hub id would fail: it must be loaded from where it was exported
                    "reader_id": "hub-0123456789ab",
                    "config": {"model_name": "some-org/some-model", "consumer_group": "hub"},
                    "exported_artifact": str(exported),
                },
                {"reader_id": "gone-0123456789ab", "config": {"model_name": str(tmp_path / "deleted-artifact")}},
            ]
        )
    )
    flags = ("--service", f"readers_file={readers_file}", "--service", f"export_dir={tmp_path / 'exports'}")
    with managed_server(fake_classifier_artifact, tmp_path, *flags) as managed:  # ready despite the gone one
        readers = managed.readers()
        assert readers["hub-0123456789ab"]["state"] == "ready"
        assert managed.classify("hub").status_code == 200
        assert readers["gone-0123456789ab"]["state"].startswith("failed: model_name: no such directory")
