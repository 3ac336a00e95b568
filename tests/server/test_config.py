"""Where settings come from: flags > environment (SLIPSTREAM_*, Takeoff aliases) > file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipstream.batching.settings import GroupSettings
from slipstream.defaults import DEFAULT_ARTIFACT_DIR
from slipstream.server.config import ConfigError, build_settings, group_leaves, service_leaves, settings_as_toml_like


def test_defaults_serve_the_default_artifact_as_primary_on_port_3000():
    settings = build_settings(environ={})
    assert settings.port == 3000
    assert list(settings.groups) == ["primary"]
    assert settings.groups["primary"].artifact == str(DEFAULT_ARTIFACT_DIR)
    assert settings.readers_by_group() == {"primary": [GroupSettings()]}


def test_an_artifact_argument_names_the_primary_group():
    settings = build_settings(artifact="/models/a", environ={})
    assert settings.groups["primary"].artifact == "/models/a"
    assert build_settings(artifact="/m", consumer_group="classify", environ={}).groups["classify"].artifact == "/m"


def test_environment_and_takeoff_aliases_with_slipstream_names_winning():
    env = {
        "TAKEOFF_MAX_BATCH_SIZE": "16",
        "TAKEOFF_BATCH_DURATION_MILLIS": "7.5",
        "SLIPSTREAM_PORT": "8080",
        "SLIPSTREAM_API_KEY": "k",
        "SLIPSTREAM_BUCKETS": "8, 16,32",
        "SLIPSTREAM_TRUNCATE": "false",
    }
    group = build_settings(artifact="a", environ=env).groups["primary"]
    assert (group.max_batch_size, group.batch_duration_millis, group.buckets, group.truncate) == (
        16,
        7.5,
        [8, 16, 32],
        False,
    )
    assert build_settings(artifact="a", environ=env).port == 8080
    env["SLIPSTREAM_MAX_BATCH_SIZE"] = "4"
    assert build_settings(artifact="a", environ=env).groups["primary"].max_batch_size == 4


def test_cpu_threading_and_inline_tokenization_are_settings():
    settings = build_settings(
        artifact="a",
        environ={
            "SLIPSTREAM_CPU__PARALLEL_RUNS": "3",
            "SLIPSTREAM_CPU__INTRA_OP_THREADS": "2",
            "SLIPSTREAM_INLINE_TOKENIZE_CHARS": "0",
            "SLIPSTREAM_CPU__WIDE_FROM_LENGTH": "0",
        },
    )
    group = settings.groups["primary"]
    assert (group.cpu.parallel_runs, group.cpu.intra_op_threads, group.cpu.wide_from_length) == (3, 2, 0)
    assert settings.inline_tokenize_chars == 0


def test_flags_beat_environment_beats_file(tmp_path: Path):
    config = tmp_path / "slipstream.toml"
    config.write_text(
        'port = 4000\nlog_level = "debug"\n'
        '[groups.classifier]\nartifact = "/a"\nmax_batch_size = 8\n'
        '[groups.reranker]\nartifact = "/b"\ndevice = "cpu"\nbatch_duration_millis = 3\n'
    )
    settings = build_settings(config_file=config, environ={})
    assert settings.port == 4000 and settings.log_level == "debug"
    assert settings.groups["classifier"].max_batch_size == 8
    assert settings.groups["reranker"].device == "cpu"
    settings = build_settings(config_file=config, environ={"SLIPSTREAM_PORT": "5000", "SLIPSTREAM_MAX_BATCH_SIZE": "2"})
    assert settings.port == 5000
    assert {g.max_batch_size for g in settings.groups.values()} == {2}
    settings = build_settings(
        config_file=config,
        environ={"SLIPSTREAM_PORT": "5000"},
        cli_service={"port": "6000", "host": None},
        cli_group={"max_batch_size": "1"},
    )
    assert settings.port == 6000 and settings.host == "0.0.0.0"
    assert {g.max_batch_size for g in settings.groups.values()} == {1}


def test_the_config_file_and_artifact_can_come_from_the_environment(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text('[groups.primary]\nartifact = "/x"\n[groups.other]\nartifact = "/y"\n')
    assert build_settings(environ={"SLIPSTREAM_CONFIG": str(config)}).groups["primary"].artifact == "/x"
    settings = build_settings(environ={"SLIPSTREAM_CONFIG": str(config), "SLIPSTREAM_ARTIFACT": "/z"})
    assert (settings.groups["primary"].artifact, settings.groups["other"].artifact) == ("/z", "/y")


@pytest.mark.parametrize(
    "env",
    [
        {"SLIPSTREAM_PORT": "0"},
        {"SLIPSTREAM_PORT": "many"},
        {"SLIPSTREAM_MAX_BATCH_SIZE": "0"},
        {"SLIPSTREAM_DEVICE": "tpu"},
        {"SLIPSTREAM_BUCKETS": "32,16"},
        {"SLIPSTREAM_BATCH_DURATION_MILLIS": "-1"},
        {"SLIPSTREAM_CPU__PARALLEL_RUNS": "-1"},
        {"SLIPSTREAM_INLINE_TOKENIZE_CHARS": "-1"},
    ],
)
def test_invalid_settings_are_refused_with_the_setting_named(env):
    with pytest.raises(ConfigError):
        build_settings(artifact="a", environ=env)


def test_unknown_keys_in_a_file_are_refused(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text('[groups.primary]\nartifact = "/x"\nmax_batch = 3\n')
    with pytest.raises(ConfigError, match="max_batch"):
        build_settings(config_file=config, environ={})
    config.write_text("port = [")
    with pytest.raises(ConfigError, match="TOML"):
        build_settings(config_file=config, environ={})


def test_the_printed_configuration_masks_the_api_key():
    text = settings_as_toml_like(build_settings(artifact="a", cli_service={"api_key": "secret"}, environ={}))
    assert "secret" not in text and 'api_key = "***"' in text
    assert "[groups.primary]" in text and "max_queue_tokens" in text


def test_every_setting_is_documented():
    for leaf in [*service_leaves(), *group_leaves()]:
        assert leaf.description, leaf.key


def test_a_yaml_config_file_reads_like_toml(tmp_path: Path):
    config = tmp_path / "slipstream.yaml"
    config.write_text(
        "port: 4100\ngroups:\n  primary:\n    artifact: /a\n    max_batch_size: 4\n  nli:\n    artifact: /b\n"
    )
    settings = build_settings(config_file=config, environ={})
    assert settings.port == 4100
    assert settings.groups["primary"].max_batch_size == 4 and settings.groups["nli"].artifact == "/b"


def test_the_settings_reference_in_the_docs_is_generated_from_the_definitions():
    from slipstream.server.settings_reference import DEFAULT_DOC, spliced

    document = DEFAULT_DOC.read_text()
    assert spliced(document) == document, "run `python -m slipstream.server.settings_reference`"
    for leaf in [*service_leaves(), *group_leaves()]:
        assert f"`{leaf.key}`" in document and leaf.env in document


def test_a_group_in_the_config_file_may_list_several_readers(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[groups.primary]\nartifact = "/a"\nmax_batch_size = 8\n'
        '[[groups.primary.readers]]\ndevice = "cuda"\ncuda.device_id = 0\n'
        '[[groups.primary.readers]]\ndevice = "cuda"\ncuda.device_id = 1\n'
        '[[groups.primary.readers]]\ndevice = "cpu"\nartifact = "/a-int8"\n'
        '[groups.other]\nartifact = "/b"\n'
    )
    readers = build_settings(config_file=config, cli_group={"batch_duration_millis": "3"}, environ={})
    primary = readers.readers_by_group()["primary"]
    assert [(r.device, r.cuda.device_id, r.artifact) for r in primary] == [
        ("cuda", 0, "/a"),
        ("cuda", 1, "/a"),
        ("cpu", 0, "/a-int8"),
    ]
    assert {r.max_batch_size for r in primary} == {8}  # the group's settings are every reader's
    assert {r.batch_duration_millis for r in primary} == {3.0}  # flags apply to every reader
    assert [r.artifact for r in readers.readers_by_group()["other"]] == ["/b"]


def test_a_readers_table_is_checked_like_a_groups(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text('[groups.primary]\nartifact = "/a"\n[[groups.primary.readers]]\nmax_batch = 3\n')
    with pytest.raises(ConfigError, match=r"groups\.primary\.readers.*max_batch"):
        build_settings(config_file=config, environ={})
    config.write_text('[groups.primary]\nartifact = "/a"\n' + '[[groups.primary.readers]]\ndevice = "cpu"\n' * 3)
    with pytest.raises(ConfigError, match="max_readers"):
        build_settings(config_file=config, cli_service={"max_readers": "2"}, environ={})


def test_the_management_api_listens_on_the_next_port_unless_told_otherwise():
    assert build_settings(environ={}).management_listen_port == 3001
    assert build_settings(cli_service={"port": "8080"}, environ={}).management_listen_port == 8081
    assert build_settings(environ={"SLIPSTREAM_MANAGEMENT_PORT": "9000"}).management_listen_port == 9000
    assert build_settings(cli_service={"management_port": "0"}, environ={}).management_listen_port is None
    keys = build_settings(cli_service={"api_key": "inference-secret", "management_api_key": "mgmt-secret"}, environ={})
    assert keys.management_key == "mgmt-secret"
    assert "secret" not in settings_as_toml_like(keys)


def test_readers_added_through_the_api_start_from_the_group_flags_and_the_reader_defaults_table(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("[reader_defaults]\nmax_batch_size = 4\n[reader_defaults.cpu]\nparallel_runs = 1\n")
    settings = build_settings(config_file=config, cli_group={"device": "cpu"}, environ={})
    defaults = settings.reader_defaults
    assert (defaults.max_batch_size, defaults.cpu.parallel_runs, defaults.device) == (4, 1, "cpu")
