"""How a consumer group derives its bucket edges and reader id."""

from __future__ import annotations

from slipstream.service.groups import bucket_edges


def test_edges_are_capped_at_the_model_maximum_which_is_always_the_last():
    assert bucket_edges(None, [8, 16, 32, 64, 128, 256, 512], 128) == [8, 16, 32, 64, 128]
    assert bucket_edges(None, [8, 16], 64) == [8, 16, 64]
    assert bucket_edges([100, 10, 1000], [8, 16], 64) == [10, 64]  # configured edges win
    assert bucket_edges([64], [8], 64) == [64]  # one bucket: everything padded to the maximum


def test_auto_padding_pads_to_the_longest_item_on_cpu_and_to_the_bucket_edge_on_gpu(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import msgspec

    from slipstream.manifest import load_manifest
    from slipstream.service.config import GroupSettings
    from slipstream.service.groups import ModelGroup
    from tests.service.fake_artifact import write_fake_artifact
    from tests.service.fakes import RecordingEngine

    artifact = write_fake_artifact(tmp_path / "a", labels=["no", "maybe", "yes"])
    manifest = load_manifest(artifact)

    class GpuEngine(RecordingEngine):
        def describe(self):
            return msgspec.structs.replace(super().describe(), device="cuda")

    def group(engine: RecordingEngine, pad_to: str = "auto") -> ModelGroup:
        with ThreadPoolExecutor(1) as executor:
            settings = GroupSettings(artifact=str(artifact), pad_to=pad_to)  # type: ignore[arg-type]
            return ModelGroup("g", settings, manifest, engine, tokenizer_executor=executor)

    assert group(RecordingEngine([8, 64])).pad_to == "longest"
    assert group(GpuEngine([8, 64])).pad_to == "bucket"
    assert group(RecordingEngine([8, 64]), pad_to="bucket").batcher.pad_to_longest is False
