"""How a consumer group derives its bucket edges and reader id."""

from __future__ import annotations

from slipstream.service.groups import bucket_edges


def test_edges_are_capped_at_the_model_maximum_which_is_always_the_last():
    assert bucket_edges(None, [8, 16, 32, 64, 128, 256, 512], 128) == [8, 16, 32, 64, 128]
    assert bucket_edges(None, [8, 16], 64) == [8, 16, 64]
    assert bucket_edges([100, 10, 1000], [8, 16], 64) == [10, 64]  # configured edges win
    assert bucket_edges([64], [8], 64) == [64]  # one bucket: everything padded to the maximum
