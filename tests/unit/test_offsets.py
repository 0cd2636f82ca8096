"""The consumer's offset book: stored offsets are committed once, never past a rewind, and
never for a partition that left."""

from __future__ import annotations

from sidecar.ingest.offsets import OffsetBook, StoredBatch

P0 = ("traffic", 0)
P1 = ("traffic", 1)


def test_the_highest_stored_offset_is_committed_and_then_not_again() -> None:
    book = OffsetBook()
    book.stored(StoredBatch({P0: 10}, book.rewinds))
    book.stored(StoredBatch({P0: 7, P1: 3}, book.rewinds))
    assert book.to_commit({P0, P1}) == {P0: 10, P1: 3}
    book.committed({P0: 10, P1: 3})
    assert book.to_commit({P0, P1}) == {}
    assert book.last_committed(P0, default=0) == 10


def test_a_batch_polled_before_a_rewind_is_never_committed() -> None:
    """Its offset counts in the old log: committing 30 on a new log of 30 would skip all of
    it if the sidecar then crashed."""
    book = OffsetBook()
    book.committed({P0: 20})
    old = StoredBatch({P0: 30, P1: 5}, book.rewinds)
    book.rewound(P0)
    book.stored(old)
    assert book.to_commit({P0, P1}) == {P1: 5}
    assert book.last_committed(P0, default=0) == 0
    book.stored(StoredBatch({P0: 12}, book.rewinds))
    assert book.to_commit({P0, P1}) == {P0: 12, P1: 5}


def test_a_rewind_forgets_what_was_waiting_for_commit() -> None:
    book = OffsetBook()
    book.stored(StoredBatch({P0: 8, P1: 4}, book.rewinds))
    book.rewound(P0)
    assert book.to_commit({P0, P1}) == {P1: 4}


def test_partitions_no_longer_assigned_are_dropped() -> None:
    book = OffsetBook()
    book.stored(StoredBatch({P0: 8, P1: 4}, book.rewinds))
    assert book.to_commit({P1}) == {P1: 4}
    assert book.to_commit({P0, P1}) == {P1: 4}


def test_forget_drops_what_is_not_committed() -> None:
    book = OffsetBook()
    book.committed({P0: 3})
    book.stored(StoredBatch({P0: 8}, book.rewinds))
    book.forget()
    assert book.to_commit({P0}) == {}
    assert book.last_committed(P0, default=0) == 3
