"""Latency statistics: percentiles and a compact log-spaced histogram."""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
# Histogram edges from 100 us to 100 s, 10 per decade: small enough to keep in
# the JSON for every point, fine enough to redraw the latency distribution.
HISTOGRAM_EDGES_S = np.logspace(-4, 2, 61)


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    p999_s: float | None
    max_s: float | None
    # counts per [HISTOGRAM_EDGES_S[i], HISTOGRAM_EDGES_S[i+1]); below/above the range land in the ends
    histogram: list[int]


def summarize_latencies(latencies_s: npt.NDArray[np.float64]) -> LatencySummary:
    values = np.asarray(latencies_s, dtype=np.float64)
    if len(values) == 0:
        return LatencySummary(
            count=0, mean_s=None, p50_s=None, p90_s=None, p99_s=None, p999_s=None, max_s=None, histogram=[]
        )
    p50, p90, p99, p999 = np.percentile(values, PERCENTILES).tolist()
    clipped = np.clip(values, HISTOGRAM_EDGES_S[0], HISTOGRAM_EDGES_S[-1] * 0.999)
    histogram, _ = np.histogram(clipped, bins=HISTOGRAM_EDGES_S)
    return LatencySummary(
        count=len(values),
        mean_s=float(values.mean()),
        p50_s=p50,
        p90_s=p90,
        p99_s=p99,
        p999_s=p999,
        max_s=float(values.max()),
        histogram=histogram.tolist(),
    )
