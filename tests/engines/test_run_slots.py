"""Runs share the cores up to a limit; a long run gets every core only when it starts alone."""

from __future__ import annotations

import threading
import time

import pytest

from slipstream.engines.run_slots import RunSlots

pytestmark = pytest.mark.timeout(30)


def test_no_more_runs_than_the_limit_go_at_once():
    slots = RunSlots(limit=2)
    lock = threading.Lock()
    running = peak = 0

    def run() -> None:
        nonlocal running, peak
        with slots.claim():
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.01)
            with lock:
                running -= 1

    threads = [threading.Thread(target=run) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2


def test_a_run_is_wide_only_if_it_asks_and_starts_alone():
    slots = RunSlots(limit=2)
    with slots.claim(wants_wide=False) as first:
        assert not first
        with slots.claim(wants_wide=True) as second:
            assert not second  # another run is going: it stays narrow
    with slots.claim(wants_wide=True) as alone:
        assert alone
        with slots.claim(wants_wide=True) as beside:
            assert not beside  # a later run does not wait for the wide one, and stays narrow
