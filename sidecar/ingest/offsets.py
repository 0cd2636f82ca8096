"""The consumer's offset book: what the writer has stored, what is committed, and which stored
offsets belong to a log that a partition was rewound away from (never to be committed)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

Position = tuple[str, int]  # (topic, partition)
Offsets = dict[Position, int]


@dataclass(frozen=True, slots=True)
class StoredBatch:
    next_offsets: Offsets
    rewinds: int  # how many rewinds had happened when the batch was polled


class OffsetBook:
    """Kept by the poll loop's thread; `forget()` is also called on kafka-python's IO thread,
    and only clears."""

    def __init__(self) -> None:
        self._uncommitted: Offsets = {}
        self._committed: Offsets = {}
        self._rewinds = 0
        self._rewound_at: dict[Position, int] = {}

    @property
    def rewinds(self) -> int:
        """Stamp a batch with this when it is polled."""
        return self._rewinds

    def stored(self, batch: StoredBatch) -> None:
        """The writer stored `batch`: its offsets may be committed, unless its partition was
        rewound after it was polled (its offsets then count in the old log, and committing them
        would skip the new log's first records)."""
        for position, offset in batch.next_offsets.items():
            if batch.rewinds < self._rewound_at.get(position, 0):
                continue
            self._uncommitted[position] = max(offset, self._uncommitted.get(position, 0))

    def rewound(self, position: Position) -> None:
        """The partition now reads its log from the start: forget both of its offsets."""
        self._rewinds += 1
        self._rewound_at[position] = self._rewinds
        self._committed.pop(position, None)
        self._uncommitted.pop(position, None)

    def to_commit(self, assigned: Collection[Position]) -> Offsets:
        """What to commit now; offsets of partitions no longer assigned are dropped (the new
        owner redelivers them)."""
        self._uncommitted = {p: o for p, o in self._uncommitted.items() if p in assigned}
        return dict(self._uncommitted)

    def committed(self, offsets: Offsets) -> None:
        self._committed.update(offsets)
        self._uncommitted.clear()

    def forget(self) -> None:
        """Drop what is not committed yet: it will be redelivered, never skipped."""
        self._uncommitted.clear()

    def last_committed(self, position: Position, default: int) -> int:
        return self._committed.get(position, default)
