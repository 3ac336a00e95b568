"""How a consumer group derives its bucket edges and padding."""

from __future__ import annotations

from slipstream.engines.buckets import cap_buckets, default_buckets


def test_edges_are_capped_at_the_model_maximum_which_is_always_the_last():
    # What the engine a group runs on does with the configured edges, or its device's defaults.
    assert cap_buckets([8, 16, 32, 64, 128, 256, 512], 128) == [8, 16, 32, 64, 128]
    assert cap_buckets([8, 16], 64) == [8, 16, 64]
    assert cap_buckets([100, 10, 1000], 64) == [10, 64]
    assert cap_buckets([64], 64) == [64]  # one bucket: everything padded to the maximum
    assert default_buckets("cuda", 128)[-1] == 128


def test_a_group_batches_to_its_engines_edges_and_batch_size(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from slipstream.batching.group import ModelGroup
    from slipstream.batching.settings import GroupSettings
    from slipstream.manifest import load_manifest
    from tests.batching.fake_artifact import write_fake_artifact
    from tests.batching.fakes import RecordingEngine

    artifact = write_fake_artifact(tmp_path / "a", labels=["no", "maybe", "yes"])
    with ThreadPoolExecutor(1) as executor:
        group = ModelGroup(
            "g",
            GroupSettings(artifact=str(artifact)),
            load_manifest(artifact),
            RecordingEngine([8, 16, 64], max_batch_size=4),
            tokenizer_executor=executor,
        )
    assert (group.edges, group.max_batch_size) == ([8, 16, 64], 4)
    assert group.batcher.queues.edges == [8, 16, 64]


def test_auto_padding_pads_to_the_longest_item_on_cpu_and_to_the_bucket_edge_on_gpu(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import msgspec

    from slipstream.batching.group import ModelGroup
    from slipstream.batching.settings import GroupSettings, PadTo
    from slipstream.manifest import load_manifest
    from tests.batching.fake_artifact import write_fake_artifact
    from tests.batching.fakes import RecordingEngine

    artifact = write_fake_artifact(tmp_path / "a", labels=["no", "maybe", "yes"])
    manifest = load_manifest(artifact)

    class GpuEngine(RecordingEngine):
        def describe(self):
            return msgspec.structs.replace(super().describe(), device="cuda")

    def group(engine: RecordingEngine, pad_to: PadTo = "auto") -> ModelGroup:
        with ThreadPoolExecutor(1) as executor:
            settings = GroupSettings(artifact=str(artifact), pad_to=pad_to)
            return ModelGroup("g", settings, manifest, engine, tokenizer_executor=executor)

    assert group(RecordingEngine([8, 64])).pad_to == "longest"
    assert group(GpuEngine([8, 64])).pad_to == "bucket"
    assert group(RecordingEngine([8, 64]), pad_to="bucket").batcher.pad_to_longest is False


class PanicException(BaseException):
    """Named like pyo3's: what a panic in the Rust tokenizer raises (not an Exception)."""


class PanickyTokenizer:
    """A real tokenizer that panics on any input containing "boom"."""

    def __init__(self, inner) -> None:
        self.inner = inner

    @staticmethod
    def _check(items) -> None:
        if any("boom" in (item if isinstance(item, str) else "".join(item)) for item in items):
            raise PanicException("index out of bounds")

    def encode_batch_fast(self, inputs):
        self._check(inputs)
        return self.inner.encode_batch_fast(inputs)

    def encode(self, *item):
        self._check([item[0] if len(item) == 1 else item])
        return self.inner.encode(*item)


def test_a_tokenizer_panic_fails_only_its_own_request(tmp_path):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import pytest

    from slipstream.batching.errors import InvalidInput
    from slipstream.batching.group import ModelGroup, Scored
    from slipstream.batching.settings import GroupSettings
    from slipstream.batching.tokenization import TextInput
    from slipstream.manifest import load_manifest
    from tests.batching.fake_artifact import write_fake_artifact
    from tests.batching.fakes import RecordingEngine

    artifact = write_fake_artifact(tmp_path / "a", labels=["no", "maybe", "yes"])

    async def scenario(executor: ThreadPoolExecutor) -> list[Scored | BaseException]:
        group = ModelGroup(
            "g",
            GroupSettings(artifact=str(artifact)),
            load_manifest(artifact),
            RecordingEngine([8, 16, 64], delay_s=0.01),
            tokenizer_executor=executor,
        )
        encoder = group.encoder
        encoder._plain = PanickyTokenizer(encoder._plain)
        encoder._truncating = {key: PanickyTokenizer(value) for key, value in encoder._truncating.items()}
        await group.start()
        # Sent together, they are tokenized together (one call per burst): the panic must stay in its request.
        texts: list[TextInput] = ["first", "second", "boom goes this one", "fourth", ("a pair", "after it")]
        results = await asyncio.gather(*(group.score([text], truncate=None) for text in texts), return_exceptions=True)
        with pytest.raises(InvalidInput, match="tokenizer"):
            await group.score(["boom, alone"], truncate=None)
        assert isinstance(await group.score(["and after it"], truncate=None), Scored)
        await group.batcher.close(1.0)
        return results

    with ThreadPoolExecutor(1) as executor:
        results = asyncio.run(scenario(executor))
    assert isinstance(results[2], InvalidInput) and "tokenizer" in str(results[2])
    assert all(isinstance(result, Scored) for index, result in enumerate(results) if index != 2), results
