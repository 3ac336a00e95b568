"""How many runs may use the CPU at once, and when one may take every core.

Up to `limit` runs go side by side, each with its own share of the cores. A
run that asks to be wide (a long batch, which parallelises well inside
operators) gets every core only if nothing else is running when it starts:
at low load that shortens the long requests that set the tail latency; under
load the engine is never idle, so every run stays narrow and throughput is
that of side-by-side single-threaded runs. A narrow run that arrives while a
wide one is running does not wait for it; the two share the cores until the
wide one ends, because making either wait for the other costs throughput
under load. See docs/design-notes.md#wide-runs-for-long-batches-at-low-load.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RunSlots:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._changed = threading.Condition()
        self._running = 0

    @contextmanager
    def claim(self, wants_wide: bool = False) -> Iterator[bool]:
        """Wait for a free slot; yields whether this run may use every core."""
        with self._changed:
            self._changed.wait_for(lambda: self._running < self.limit)
            wide = wants_wide and self._running == 0
            self._running += 1
        try:
            yield wide
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify()
