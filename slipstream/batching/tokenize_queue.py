"""Tokenization off the event loop, coalesced across concurrent requests.

Requests that arrive while the tokenizer thread is busy wait together and are
encoded with one `encode_batch` call per kind (texts or pairs, truncation
settings): under load that is one thread hand-off per burst instead of one per
request, and the Rust tokenizer parallelises across the whole burst.

A request of only a few short texts (at most `inline_chars` characters in
all) is tokenized on the event loop instead: the Rust tokenizer encodes it
faster than the hand-off to a worker thread and back costs the loop (submit
plus completion callback), and far faster than that hand-off adds to the
request's latency, since a thread that slept must be woken first.
See docs/design-notes.md#short-requests-tokenized-on-the-event-loop.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from slipstream.batching.chunking import Chunking
from slipstream.batching.tokenization import EncodedItems, TextEncoder, TextInput, TruncationDirection


@dataclass(slots=True)
class _Job:
    items: Sequence[TextInput]
    truncate: bool
    direction: TruncationDirection
    future: asyncio.Future[EncodedItems]
    chunking: Chunking | None = None


# Requests with more items than this always go to the worker thread, so that
# deciding never loops over a large request on the event loop.
INLINE_MAX_ITEMS = 8


def _characters(items: Sequence[TextInput]) -> int:
    return sum(len(item) if isinstance(item, str) else len(item[0]) + len(item[1]) for item in items)


class TokenizeQueue:
    def __init__(self, encoder: TextEncoder, executor: Executor, *, inline_chars: int = 0) -> None:
        self._encoder = encoder
        self._executor = executor
        self._inline_chars = inline_chars
        self._pending: list[_Job] = []
        self._busy = False

    def _is_small(self, items: Sequence[TextInput]) -> bool:
        if not self._inline_chars or len(items) > INLINE_MAX_ITEMS:
            return False
        try:
            return _characters(items) <= self._inline_chars
        except TypeError:  # not strings: the worker's encode reports which input
            return False

    async def encode(
        self,
        items: Sequence[TextInput],
        *,
        truncate: bool,
        direction: TruncationDirection = "right",
        chunking: Chunking | None = None,
    ) -> EncodedItems:
        if self._is_small(items):
            return self._encoder.encode(items, truncate=truncate, direction=direction, chunking=chunking)
        loop = asyncio.get_running_loop()
        job = _Job(items, truncate, direction, loop.create_future(), chunking)
        self._pending.append(job)
        if not self._busy:
            self._dispatch(loop)
        return await job.future

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs, self._pending = self._pending, []
        self._busy = True
        done = loop.run_in_executor(self._executor, self._encode_jobs, jobs)
        done.add_done_callback(lambda finished: self._finish(loop, jobs, finished))

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        jobs: list[_Job],
        finished: asyncio.Future[list[EncodedItems | Exception]],
    ) -> None:
        try:
            outcomes: list[EncodedItems | Exception] = finished.result()
        except BaseException as exc:  # the executor itself failed (e.g. shut down)
            outcomes = [exc if isinstance(exc, Exception) else RuntimeError(str(exc))] * len(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.future.done():  # its request was cancelled meanwhile
                continue
            if isinstance(outcome, Exception):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
        self._busy = False
        if self._pending:
            self._dispatch(loop)

    def _encode_jobs(self, jobs: list[_Job]) -> list[EncodedItems | Exception]:
        """In the tokenizer thread: one encode per kind of job, split back per job."""
        if len(jobs) == 1:
            return [self._encode_one(jobs[0])]
        outcomes: dict[int, EncodedItems | Exception] = {}
        kinds: dict[tuple[TruncationDirection, bool], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            if not job.truncate or job.chunking is not None:  # rarer kinds are encoded per job
                outcomes[index] = self._encode_one(job)
                continue
            has_pairs = any(not isinstance(item, str) for item in job.items)
            kinds[(job.direction, has_pairs)].append(index)
        for (direction, _), indices in kinds.items():
            combined = [item for index in indices for item in jobs[index].items]
            try:
                encoded = self._encoder.encode(combined, truncate=True, direction=direction, check=False)
            except Exception:  # e.g. an input of the wrong type: find whose, job by job
                for index in indices:
                    outcomes[index] = self._encode_one(jobs[index])
                continue
            start = 0
            for index in indices:
                stop = start + len(jobs[index].items)
                # Checked per job, so one job's empty input cannot fail another's.
                outcomes[index] = self._checked(encoded.slice(start, stop))
                start = stop
        return [outcomes[index] for index in range(len(jobs))]

    def _encode_one(self, job: _Job) -> EncodedItems | Exception:
        try:
            return self._encoder.encode(
                job.items, truncate=job.truncate, direction=job.direction, chunking=job.chunking
            )
        except Exception as exc:
            return exc

    def _checked(self, encoded: EncodedItems) -> EncodedItems | Exception:
        try:
            self._encoder.check(encoded, truncated=True)
        except Exception as exc:
            return exc
        return encoded
