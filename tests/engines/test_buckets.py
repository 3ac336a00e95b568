"""Bucket edges: fine on CPU, coarse on GPU, always ending at the model's maximum."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.engines.base import EngineError
from slipstream.engines.buckets import (
    bucket_index,
    cap_buckets,
    default_buckets,
    padding_efficiency,
    warmup_shapes,
)


def test_cpu_edges_are_every_8_tokens_up_to_128_then_coarser() -> None:
    edges = default_buckets("cpu", 512)
    assert edges[:16] == list(range(8, 129, 8))
    assert edges[16:24] == list(range(144, 257, 16))
    assert edges[-1] == 512
    assert np.all(np.diff(edges) > 0)


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_edges_are_few(device: str) -> None:
    edges = default_buckets(device, 512)
    assert edges == [16, 32, 64, 128, 192, 256, 384, 512]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("max_length", [1, 7, 100, 128, 514, 2048])
def test_edges_end_at_the_model_maximum(device: str, max_length: int) -> None:
    edges = default_buckets(device, max_length)
    assert edges[-1] == max_length
    assert all(0 < e <= max_length for e in edges)
    assert edges == sorted(set(edges))


def test_cap_buckets_drops_edges_past_the_maximum_and_adds_it() -> None:
    assert cap_buckets([64, 16, 1024, 32], 100) == [16, 32, 64, 100]
    assert cap_buckets([16, 100], 100) == [16, 100]


def test_bucket_index_is_the_smallest_edge_at_least_the_length() -> None:
    edges = [8, 16, 24]
    assert bucket_index(edges, [1, 8, 9, 16, 17, 24]).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(EngineError, match="exceeds the largest bucket 24"):
        bucket_index(edges, [25])


def test_padding_efficiency_counts_real_over_padded_tokens() -> None:
    assert padding_efficiency([8, 16], [8, 16]) == 1.0
    assert padding_efficiency([8, 16], [4, 12]) == pytest.approx(16 / 24)


def test_fine_cpu_edges_waste_less_than_powers_of_two() -> None:
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(30), 0.8, 5000).astype(int), 3, 512)
    fine = padding_efficiency(default_buckets("cpu", 512), lengths)
    powers = padding_efficiency([16, 32, 64, 128, 256, 512], lengths)
    assert fine >= 0.85 > powers


def test_warmup_shapes_cover_every_bucket_at_batch_1_and_on_a_gpu_at_its_largest_batch() -> None:
    assert warmup_shapes([8, 16], [4, 4], fixed_shapes=True) == [(1, 8), (4, 8), (1, 16), (4, 16)]
    assert warmup_shapes([8, 16], [4, 2], fixed_shapes=True) == [(1, 8), (4, 8), (1, 16), (2, 16)]
    assert warmup_shapes([8, 16], [4, 1], fixed_shapes=True) == [(1, 8), (4, 8), (1, 16)]
    # ONNX Runtime on a CPU compiles nothing per shape: one run per bucket.
    assert warmup_shapes([8, 16], [4, 4], fixed_shapes=False) == [(1, 8), (1, 16)]
