"""Served batch invariance: a pair's score under load against the same pair sent alone.

A few rerank requests are scored while other clients keep the server busy
(so their pairs share batches with whatever else is queued), then every pair
of them is sent again as a request of its own, with nothing else running.
The largest difference is what a client could see; for a batch-invariant
variant it is 0.
"""

from __future__ import annotations

import asyncio

import msgspec

from benchmarks.http_client import fetch


def _post(port: int, body: bytes) -> list[list[float]]:
    response = asyncio.run(fetch("127.0.0.1", port, "POST", "/classify", body, timeout_s=120))
    if response.status != 200:
        raise RuntimeError(f"/classify answered {response.status}: {response.body[:200]!r}")
    result: list[list[float]] = msgspec.json.decode(response.body)["result"]
    return result


async def _scores_under_load(
    port: int, probes: list[bytes], load: list[bytes], clients: int
) -> list[list[list[float]]]:
    """The probes' scores while `clients - 1` others keep sending `load`."""
    done = asyncio.Event()

    async def busy(offset: int) -> None:
        i = offset
        while not done.is_set():
            await fetch("127.0.0.1", port, "POST", "/classify", load[i % len(load)], timeout_s=120)
            i += clients

    background = [asyncio.create_task(busy(k)) for k in range(max(1, clients - 1))]
    await asyncio.sleep(0.5)
    try:
        responses = await asyncio.gather(*(fetch("127.0.0.1", port, "POST", "/classify", p, 120) for p in probes))
    finally:
        done.set()
        await asyncio.gather(*background, return_exceptions=True)
    return [msgspec.json.decode(r.body)["result"] for r in responses]


def served_invariance(port: int, requests: list[list[list[str]]], clients: int) -> tuple[float, int]:
    probes = requests[:4]
    under_load = asyncio.run(
        _scores_under_load(
            port,
            [msgspec.json.encode({"text": r}) for r in probes],
            [msgspec.json.encode({"text": r}) for r in requests[4:]],
            clients,
        )
    )
    worst, n = 0.0, 0
    for request, scores in zip(probes, under_load, strict=True):
        for pair, score in zip(request, scores, strict=True):
            alone = _post(port, msgspec.json.encode({"text": [pair]}))[0]
            worst = max(worst, max(abs(a - b) for a, b in zip(alone, score, strict=True)))
            n += 1
    return worst, n
