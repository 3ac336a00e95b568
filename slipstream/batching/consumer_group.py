"""A consumer group: the readers that serve one name, and the choice of reader per request.

Each reader (`group.ModelGroup`) has its own engine, tokenizer and batcher: one
reader per GPU, a CPU reader beside a GPU one, or two replicas of a model. A
request goes to the ready reader with the fewest queued tokens; ties (an idle
group) go round the readers in turn, so every reader takes work. The readers of
one group give the same labels (`check_compatible`), so a response reads the
same whichever served it.

Readers come and go while the group serves: `add` one (it takes work once
warmed up, `ready`), `drain` one (it stops admitting at once, finishes what it
holds within a time bound, then leaves the group).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from slipstream.batching.chunking import LongText
from slipstream.batching.errors import Conflict, Unavailable
from slipstream.batching.group import ModelGroup, Scored
from slipstream.batching.settings import GroupSettings
from slipstream.batching.tokenization import TextEncoder, TextInput, TruncationDirection
from slipstream.manifest import Manifest


class ConsumerGroup:
    def __init__(self, name: str) -> None:
        self.name = name
        self._readers: dict[str, ModelGroup] = {}
        # Requests each reader is handling (tokenizing, queued or running): the tie-break
        # between readers whose queues are both empty, e.g. while a burst is being tokenized.
        self._active: Counter[str] = Counter()
        self._turn = 0

    @property
    def readers(self) -> list[ModelGroup]:
        """Every reader in the group, in the order they joined (warming up and draining ones too)."""
        return list(self._readers.values())

    def __len__(self) -> int:
        return len(self._readers)

    def serving(self) -> list[ModelGroup]:
        """The readers that take new requests: warmed up and not draining."""
        return [reader for reader in self._readers.values() if reader.ready and not reader.batcher.closing]

    def any_reader(self) -> ModelGroup:
        """One reader (a serving one if there is one), to speak for the group: the readers of a
        group serve one model, in replicas or variants."""
        readers = self.serving() or self.readers
        if not readers:
            raise Unavailable(f"consumer group {self.name!r} has no reader")
        return readers[0]

    @property
    def manifest(self) -> Manifest:
        """The model's labels, activation and problem type: the same for every reader of the group."""
        return self.any_reader().manifest

    @property
    def settings(self) -> GroupSettings:
        return self.any_reader().settings

    @property
    def encoder(self) -> TextEncoder:
        """A reader's tokenizer, for routes that tokenize without scoring (/tokenize, /decode)."""
        return self.any_reader().encoder

    def check_compatible(self, manifest: Manifest) -> None:
        """Raise Conflict unless a model with `manifest` gives the same kind of answer as this group's readers."""
        first = next(iter(self._readers.values()), None)
        if first is None:
            return
        theirs = first.manifest
        if (theirs.labels, theirs.problem_type) != (manifest.labels, manifest.problem_type):
            raise Conflict(
                f"consumer group {self.name!r} serves a {theirs.problem_type} model with labels "
                f"{theirs.labels}; this model is {manifest.problem_type} with labels {manifest.labels}. "
                "The readers of one group must answer alike: use another consumer_group"
            )

    def add(self, reader: ModelGroup) -> None:
        """Join the group; it takes requests once `reader.ready` (after warm-up)."""
        self.check_compatible(reader.manifest)
        self._readers[reader.reader_id] = reader

    def choose(self) -> ModelGroup:
        """The serving reader with the fewest queued tokens (then fewest requests), in turn among equals."""
        readers = self.serving()
        if not readers:
            raise Unavailable(f"consumer group {self.name!r} has no ready reader")
        if len(readers) == 1:
            return readers[0]
        self._turn = (self._turn + 1) % len(readers)
        in_turn = readers[self._turn :] + readers[: self._turn]
        return min(in_turn, key=lambda reader: (reader.batcher.queues.tokens, self._active[reader.reader_id]))

    async def score(
        self,
        items: Sequence[TextInput],
        *,
        truncate: bool | None = None,
        long_text: LongText | None = None,
        direction: TruncationDirection = "right",
        timeout_s: float | None = None,
    ) -> Scored:
        """`ModelGroup.score` on the chosen reader.

        A reader that starts draining while it holds the request answers 503 for what it could not
        finish; the request then goes to another serving reader once, if the group has one.
        """
        reader = self.choose()
        try:
            return await self._score_on(reader, items, truncate, long_text, direction, timeout_s)
        except Unavailable:
            if not reader.batcher.closing:
                raise
            if not any(other is not reader for other in self.serving()):
                raise Unavailable(
                    f"consumer group {self.name!r}: reader {reader.reader_id} is being removed (or the service "
                    "is shutting down) and could not run this request"
                ) from None
        return await self._score_on(self.choose(), items, truncate, long_text, direction, timeout_s)

    async def _score_on(
        self,
        reader: ModelGroup,
        items: Sequence[TextInput],
        truncate: bool | None,
        long_text: LongText | None,
        direction: TruncationDirection,
        timeout_s: float | None,
    ) -> Scored:
        self._active[reader.reader_id] += 1
        try:
            return await reader.score(
                items, truncate=truncate, long_text=long_text, direction=direction, timeout_s=timeout_s
            )
        finally:
            self._active[reader.reader_id] -= 1

    async def drain(self, reader_id: str, timeout_s: float) -> ModelGroup:
        """Stop admitting to a reader, let its queued and running work finish (work still there
        after `timeout_s` fails with 503), stop its engine workers, and take it out of the group."""
        reader = self._readers[reader_id]
        reader.batcher.stop_admitting()
        try:
            await reader.batcher.close(timeout_s)
        finally:
            del self._readers[reader_id]
            self._active.pop(reader_id, None)
        return reader
