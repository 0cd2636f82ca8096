"""The traffic consumer: poll → hand the batch to the writer process → commit once stored.

Offsets are committed only after their batch is stored, so a crash anywhere redelivers and the
unique event id turns the redelivery into a counted duplicate. Validation and storage run in
the writer process (`writer.py`) so fetching and storing use two cores; when the writer falls
behind, the poll loop pauses its partitions (backpressure) but keeps polling so the group does
not evict it. A consumer the group leaves waiting past a few session timeouts says so and
rejoins (`assignment.py`, `membership.py`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from sidecar.client.kafka_clients import build_client
from sidecar.client.security import kafka_security_options
from sidecar.errors import BrokerError
from sidecar.ingest import membership
from sidecar.ingest.assignment import REJOIN_AFTER_SESSIONS, AssignmentWatch, rejoin_message
from sidecar.ingest.offsets import OffsetBook, Offsets, StoredBatch
from sidecar.ingest.writer import IngestWriter, RawRecord, WriterError
from sidecar.metrics import Metrics
from sidecar.settings import Settings

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
LAG_INTERVAL_S = 5.0
COMMIT_INTERVAL_S = 0.5
REVOKE_DRAIN_S = 10.0


@dataclass(frozen=True, slots=True)
class PolledBatch:
    records: list[RawRecord]
    next_offsets: Offsets
    rewinds: int


class TrafficConsumer:
    """Owns the Kafka consumer and the writer process; `run()` blocks until `stop()`."""

    def __init__(self, settings: Settings, bootstrap_servers: str, metrics: Metrics) -> None:
        self._settings = settings
        self._bootstrap_servers = bootstrap_servers
        self._metrics = metrics
        self._stopping = threading.Event()
        self._assigned = threading.Event()
        self._running = threading.Event()
        self._room = threading.Event()  # the pump took a batch: the queue has room again
        self._failure: WriterError | None = None
        self._writer: IngestWriter | None = None
        self._pending: queue.Queue[PolledBatch | None] = queue.Queue(settings.ingest_queue_batches)
        self._stored: queue.Queue[StoredBatch] = queue.Queue()
        self._offsets = OffsetBook()
        self._topic_ids: dict[str, uuid.UUID] = {}
        self._last_commit = 0.0
        self._lag_checked = 0.0
        self._lag_partitions: set[tuple[str, int]] = set()
        self._owned: frozenset[int] = frozenset()
        self._partition_count = 0
        bound_s = REJOIN_AFTER_SESSIONS * settings.kafka_session_timeout_ms / 1000
        self._watch = AssignmentWatch(bound_s)
        self._consumer = self._connect()

    def _connect(self, member_id: str | None = None) -> KafkaConsumer:
        """A new KafkaConsumer of the group (joining as `member_id` when given)."""
        settings = self._settings
        try:
            consumer = build_client(
                KafkaConsumer,
                bootstrap_servers=self._bootstrap_servers,
                group_id=settings.consumer_group,
                client_id="gepa-sidecar",
                enable_auto_commit=False,
                auto_offset_reset=settings.kafka_auto_offset_reset,
                max_poll_records=settings.ingest_batch_size,
                session_timeout_ms=settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
                **kafka_security_options(settings),
            )
        except KafkaError as exc:
            raise BrokerError(
                f"cannot reach Kafka at {self._bootstrap_servers} "
                f"({settings.kafka_security_protocol}): {exc}"
            ) from exc
        membership.listen_for_join_answers(consumer, self._watch.answered)
        if member_id is not None:
            membership.join_as(consumer, member_id)
        return consumer

    @property
    def assigned(self) -> bool:
        """True once the group has given this consumer partitions (readiness)."""
        return self._assigned.is_set()

    @property
    def running(self) -> bool:
        """True while the poll loop runs, whether or not the group gave it partitions."""
        return self._running.is_set()

    @property
    def unassigned_s(self) -> float:
        """How long the group has kept this consumer waiting for its assignment; 0: a member."""
        return self._watch.waited(time.monotonic())

    def wait_assigned(self, timeout: float) -> bool:
        """Block until the group assigns partitions, or `timeout` seconds pass."""
        return self._assigned.wait(timeout)

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and return; safe from a signal handler."""
        self._stopping.set()
        if self._writer is not None:
            self._writer.stop()

    def close(self) -> None:
        """Let go of a consumer that was connected but never run (a stop came first)."""
        membership.close(self._consumer, leave=self._watch.member)

    def run(self) -> None:
        """Consume until `stop()`; raises WriterError if the writer process died."""
        self._writer = IngestWriter(self._settings, self._bootstrap_servers)
        self._subscribe()
        pump = threading.Thread(target=self._write_loop, name="ingest-pump", daemon=True)
        pump.start()
        self._running.set()
        try:
            while not self._stopping.is_set():
                self._commit_stored()
                self._poll_once()
                self._check_positions()
                self._check_assignment()
        finally:
            self._running.clear()
            self._pending.put(None)
            pump.join()
            self._commit_stored(now=True)
            membership.close(self._consumer, leave=self._watch.member)  # see membership.py
            self._metrics.consumer_unassigned.set(0)
            self._forget_lag(set(self._lag_partitions))
            self._writer.close()
        if self._failure is not None:
            raise self._failure

    def _subscribe(self) -> None:
        self._watch.waiting(time.monotonic())
        self._consumer.subscribe([self._settings.traffic_topic], listener=_Rebalance(self))

    def _check_assignment(self) -> None:
        """Show how long the group has kept this consumer waiting; past the bound, rejoin: as a
        new member, or in the place of a leader the group names but no longer lists (see
        membership.py), when that is what stalls it."""
        self._metrics.consumer_unassigned.set(self.unassigned_s)
        due = self._watch.due(time.monotonic())
        if due is None:
            return
        ghost = membership.absent_leader(self._consumer, due.leader)
        self._metrics.consumer_rejoins.inc()
        settings = self._settings
        message = rejoin_message(settings.consumer_group, settings.traffic_topic, due, ghost)
        log.log(logging.WARNING if due.first or ghost else logging.INFO, message)
        # a follower's LeaveGroup is harmless (and frees its place at once); a leader's is not
        membership.close(self._consumer, leave=due.leader is not None)
        self._consumer = self._connect(member_id=ghost)
        self._subscribe()

    def _poll_once(self) -> None:
        """Poll once; while the writer is behind, every assigned partition stays paused. A
        record that arrives anyway is queued, never dropped: a later commit would skip it."""
        self._wait_for_room()
        polled = self._consumer.poll(
            timeout_ms=POLL_TIMEOUT_MS, max_records=self._settings.ingest_batch_size
        )
        if not polled:
            return
        records: list[RawRecord] = [
            (r.topic, r.partition, r.offset, r.key, r.value, r.headers)
            for batch in polled.values()
            for r in batch
        ]
        next_offsets = {
            (tp.topic, tp.partition): batch[-1].offset + 1 for tp, batch in polled.items()
        }
        self._pending.put(PolledBatch(records, next_offsets, self._offsets.rewinds))

    def _wait_for_room(self) -> None:
        """When the queue is full, pause and wait for the writer to take a batch (at most one
        poll timeout), then resume at once: a paused poll would sit out its whole timeout
        while the writer frees room in a few milliseconds. Still behind, the poll that follows
        keeps its full timeout: the group's protocol (a rejoin after a revoke) needs it."""
        self._room.clear()
        if self._pending.full():
            self._pause(True)
            self._room.wait(POLL_TIMEOUT_MS / 1000)
        self._pause(self._pending.full())

    def _pause(self, paused: bool) -> None:
        self._metrics.ingest_paused.set(1 if paused else 0)
        if paused:
            self._consumer.pause(*self._consumer.assignment())
        elif self._consumer.paused():
            self._consumer.resume(*self._consumer.paused())

    def _write_loop(self) -> None:
        """Hand batches to the writer in order; after one is abandoned (stopping while the
        store is down) the later ones are dropped too, since committing them would skip its
        records. If the writer dies, the consumer stops without committing past it."""
        abandoned = False
        while True:
            batch = self._pending.get()
            self._room.set()
            try:
                if batch is None:
                    return
                if abandoned or self._writer is None:
                    continue
                try:
                    counts = self._writer.write(batch.records)
                except WriterError as exc:
                    log.error("%s; stopping", exc)
                    self._failure = exc
                    self._stopping.set()
                    counts = None
                if counts is None:
                    abandoned = True
                    continue
                self._metrics.count_outcomes(counts)
                self._stored.put(StoredBatch(batch.next_offsets, batch.rewinds))
            finally:
                self._pending.task_done()

    def _commit_stored(self, now: bool = False) -> None:
        """Commit what the writer has stored: at most every COMMIT_INTERVAL_S (a crash then
        redelivers at most that much, as counted duplicates), or `now`."""
        while not self._stored.empty():
            self._offsets.stored(self._stored.get_nowait())
        if not now and time.monotonic() - self._last_commit < COMMIT_INTERVAL_S:
            return
        self._last_commit = time.monotonic()
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        owned = self._offsets.to_commit(assigned)
        if not owned:
            return
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in owned.items()
        }
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("commit refused after a rebalance; records will be redelivered: %s", exc)
            self._offsets.forget()
        except KafkaError as exc:
            log.warning("commit failed, will retry: %s", exc)
        else:
            self._offsets.committed(owned)

    def drain(self) -> None:
        """Store what is in flight: called before partitions are taken away.

        It commits nothing: kafka-python calls it on its IO thread, where a blocking commit
        raises (and ended the sidecar). Offsets not committed yet are forgotten, never carried
        into the next generation: the records are redelivered (counted duplicates, stored
        once) rather than skipped.
        """
        deadline = time.monotonic() + REVOKE_DRAIN_S
        while self._pending.unfinished_tasks and time.monotonic() < deadline:
            if self._stopping.wait(0.01):
                break
        self._offsets.forget()

    def _check_positions(self) -> None:
        """Every few seconds: set the lag gauge, and rewind a partition whose log is not the one
        its position was read from. Kafka answers a fetch past the log end with
        OFFSET_OUT_OF_RANGE; a memory-only broker that restarted (the embedded one) answers
        nothing, which would stall us. And once such a broker's new log has grown past the old
        position, or a topic was deleted and created again, nothing is out of range: only the
        topic's new id (seen at the client's next metadata refresh) says that every record in it
        is unread."""
        now = time.monotonic()
        if now - self._lag_checked < LAG_INTERVAL_S:
            return
        self._lag_checked = now
        assignment = self._consumer.assignment()
        self._forget_lag(self._lag_partitions - {(tp.topic, tp.partition) for tp in assignment})
        recreated = self._recreated_topics({tp.topic for tp in assignment})
        for tp in assignment:
            if tp.topic in recreated:
                log.warning("%s was created again: reading its new log from the start", tp)
                self._rewind(tp)
                continue
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            position = self._consumer.position(tp) or 0
            if position > end:
                log.warning(
                    "%s is at %d past the log end %d: the broker lost data; rewinding",
                    tp,
                    position,
                    end,
                )
                self._rewind(tp)
                continue
            done = self._offsets.last_committed((tp.topic, tp.partition), position)
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, end - done))
            self._lag_partitions.add((tp.topic, tp.partition))

    def _recreated_topics(self, topics: set[str]) -> set[str]:
        """The topics whose id in the consumer's metadata changed since the last look. The id is
        not on KafkaConsumer's public surface; its cluster metadata (kafka-python, pinned in the
        lock file) is where the client itself notices a recreated topic."""
        cluster = self._consumer._cluster
        recreated = set()
        for topic in topics:
            current = cluster.topic_id(topic)
            if current is None or current.int == 0:
                continue  # unknown for now (the topic is missing, or the broker predates ids)
            if self._topic_ids.setdefault(topic, current) != current:
                recreated.add(topic)
                self._topic_ids[topic] = current
        return recreated

    def _rewind(self, tp: TopicPartition) -> None:
        """Read `tp` from its log's start. Offsets of batches polled before now belong to the
        old log: they are never committed, or a crash would skip the new log's first records."""
        self._consumer.seek_to_beginning(tp)
        self._offsets.rewound((tp.topic, tp.partition))

    def _forget_lag(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions this consumer no longer owns lose their lag series: the member that owns
        them now reports them, and a stale value would add up to a lag no one has."""
        self._metrics.forget_partitions(partitions)
        self._lag_partitions -= partitions

    def owned_partitions(self) -> frozenset[int]:
        """The traffic topic's partitions this member owns now (set by the rebalance callbacks
        on the consumer's thread; read by the judge's)."""
        return self._owned

    def owned_share(self) -> float:
        """The share of the traffic topic's partitions this member owns: the part of a
        prompt's judge budget its judge worker may spend (1 until the first assignment)."""
        if not self._partition_count:
            return 1.0
        return min(1.0, len(self._owned) / self._partition_count)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self._watch.waiting(time.monotonic())
        self._owned -= {
            tp.partition for tp in partitions if tp.topic == self._settings.traffic_topic
        }
        self.drain()
        self._forget_lag({(tp.topic, tp.partition) for tp in partitions})

    def on_lost(self, partitions: set[TopicPartition]) -> None:
        """The group evicted this member (a session expired, or a restarted broker forgot it):
        its partitions may be another member's already and a commit would be refused, so what is
        uncommitted is forgotten (redelivered, never skipped). kafka-python calls this on its IO
        thread, where a blocking commit raises and would end the consumer."""
        self._watch.waiting(time.monotonic())
        self._offsets.forget()
        self._forget_lag({(tp.topic, tp.partition) for tp in partitions})

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        recovered = self._watch.joined(time.monotonic())
        if recovered is not None:
            log.info("consumer group %s: %s", self._settings.consumer_group, recovered)
        self._owned |= {
            tp.partition for tp in partitions if tp.topic == self._settings.traffic_topic
        }
        known = self._consumer._cluster.partitions_for_topic(self._settings.traffic_topic)
        self._partition_count = len(known or ()) or len(self._owned)
        if partitions:
            self._assigned.set()
        else:
            self._assigned.clear()
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: TrafficConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._owner.on_revoked(revoked)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._owner.on_lost(lost)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner.on_assigned(assigned)
