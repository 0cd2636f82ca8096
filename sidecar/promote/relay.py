"""The outbox relay: delivers each activation to each target exactly once, and keeps this
replica's file and served document in line with the store.

An approval commits the new active version and one outbox row per target in one transaction;
this thread delivers them. Before a delivery it commits the attempt, so after a crash between
delivering and marking the row delivered, the next attempt first asks the target whether it
already holds that activation (the Kafka record's `gepa-activation` header, the file's version
and sha256) and does not deliver twice.

Which rows a replica delivers: on PostgreSQL one replica at a time holds the publisher lock and
delivers the outbox (the topic must get each activation once); every replica keeps its own file
(a pod's emptyDir) and its own served document in line with the active versions, each tick, so
a new pod, or one whose file was deleted, republishes on start. Counters of decisions follow
the audit log, so an approval made by the CLI in another process is counted too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sidecar.errors import PublishError, SidecarError
from sidecar.events import PromptDocument
from sidecar.metrics import Metrics
from sidecar.promote.publishers import Publisher
from sidecar.store.awaiting import awaiting_approval_since
from sidecar.store.candidates import status_counts
from sidecar.store.leadership import PUBLISHER_LOCK, leadership
from sidecar.store.outbox import (
    OutboxItem,
    begin_attempt,
    mark_delivered,
    mark_failed,
    mark_superseded,
    pending_outbox,
)
from sidecar.store.promotions import active_documents, decisions_since, latest_audit_id

log = logging.getLogger(__name__)

LATEST_ONLY = frozenset({"file", "http"})
"""Targets that hold one document per prompt: an activation superseded before delivery is
skipped there (the topic keeps every activation, in order)."""

DECISIONS = {"approve": "approved", "force_approve": "forced", "reject": "rejected"}


class OutboxRelay:
    """`start()` runs a tick now (the start-up republish) and then one every poll interval, or
    sooner after `wake()`; a tick never raises."""

    def __init__(
        self,
        engine: Engine,
        publishers: Mapping[str, Publisher],
        metrics: Metrics,
        poll_interval_s: float,
    ) -> None:
        self.engine = engine
        self.publishers = dict(publishers)
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._in_place = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
        self._audit_seen: int | None = None
        self._known_statuses: set[tuple[str, str]] = set()
        self.ticks = 0

    def start(self) -> OutboxRelay:
        self.tick()
        self._thread.start()
        return self

    def wake(self) -> None:
        """Deliver now (a decision was just committed in this process)."""
        self._wake.set()

    @property
    def prompts_in_place(self) -> bool:
        """True once a tick has had this replica's file and served document hold every active
        version (the start-up republish); it stays true through later outages."""
        return self._in_place.is_set()

    @property
    def alive(self) -> bool:
        """False when the thread has ended (after `stop()`, or if it died); True before `start()`
        has started it, while its first delivery runs on the caller's thread."""
        return self._thread.ident is None or self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> bool:
        """Finish the tick under way and close the publishers, waiting at most `timeout`
        seconds (a Kafka delivery may wait its own timeout); False when the thread is still
        running then: it is a daemon, and closes the publishers itself when it ends."""
        self._stopping.set()
        self._wake.set()
        if self._thread.ident is None:
            self._close()
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.wait(self.poll_interval_s)
                self._wake.clear()
                if not self._stopping.is_set():
                    self.tick()
        finally:
            self._close()

    def _close(self) -> None:
        for publisher in self.publishers.values():
            publisher.close()

    def tick(self) -> None:
        try:
            # This replica's own file and served document first: they gate its readiness, and
            # a delivery to a target that is down (Kafka) may wait its timeout.
            active = active_documents(self.engine)
            if self._reconcile(active):
                self._in_place.set()
            with leadership(self.engine, PUBLISHER_LOCK) as leader:
                if leader:
                    self._deliver_outbox()
                    self._count_decisions()
            self._refresh_gauges(active)
        except (SidecarError, SQLAlchemyError) as exc:
            log.warning("publishing paused: %s", " ".join(str(exc).split())[:300])
        except Exception:
            log.exception("publishing tick failed")
        self.ticks += 1

    def _deliver_outbox(self) -> None:
        items = pending_outbox(self.engine, list(self.publishers))
        newest: dict[tuple[str, str], int] = {}
        for item in items:
            key = (item.prompt_name, item.target)
            newest[key] = max(newest.get(key, 0), item.activation_id)
        blocked: set[str] = set()
        for item in items:
            latest = newest[item.prompt_name, item.target]
            if item.target in LATEST_ONLY and item.activation_id < latest:
                mark_superseded(self.engine, item.id, _now())
            elif item.target not in blocked and not self._deliver(item):
                blocked.add(item.target)  # in order: a later activation waits for this one

    def _deliver(self, item: OutboxItem) -> bool:
        publisher = self.publishers[item.target]
        document = PromptDocument.model_validate(item.document)
        attempt = begin_attempt(self.engine, item.id, _now())
        try:
            # A file or served document may hold it already (this replica's reconciliation
            # got there first); asking the topic is a scan, so only after an earlier attempt.
            asks = item.target in LATEST_ONLY or attempt.attempts > 0
            if asks and publisher.holds(document, item.activation_id):
                outcome = "already_delivered"
            else:
                publisher.publish(document, item.activation_id)
                outcome = "ok"
        except PublishError as exc:
            mark_failed(self.engine, item.id, str(exc), _now())
            self.metrics.publishes.labels(item.target, "failed").inc()
            log.warning(
                "publishing %s v%d to %s failed: %s",
                item.prompt_name,
                item.version,
                item.target,
                exc,
            )
            return False
        mark_delivered(self.engine, item.id, _now())
        self.metrics.publishes.labels(item.target, outcome).inc()
        log.info(
            "published %s v%d to %s (%s)", item.prompt_name, item.version, item.target, outcome
        )
        return True

    def _reconcile(self, active: Mapping[str, dict[str, Any]]) -> bool:
        """This replica's file and served document hold each prompt's active version; False
        when one could not be written."""
        held = True
        for name, raw in active.items():
            document = PromptDocument.model_validate(raw)
            for target in LATEST_ONLY & set(self.publishers):
                publisher = self.publishers[target]
                if publisher.holds(document, 0):
                    continue
                try:
                    publisher.publish(document, 0)
                except PublishError as exc:
                    self.metrics.publishes.labels(target, "failed").inc()
                    log.warning(
                        "republishing %s v%d to %s failed: %s", name, document.version, target, exc
                    )
                    held = False
                    continue
                self.metrics.publishes.labels(target, "ok").inc()
                log.info("%s now holds %s v%d", target, name, document.version)
        return held

    def _count_decisions(self) -> None:
        """Decisions recorded since the last tick (by any client) become counters; at start the
        audit log so far is history, not news."""
        if self._audit_seen is None:
            self._audit_seen = latest_audit_id(self.engine)
            return
        for entry in decisions_since(self.engine, self._audit_seen):
            self._audit_seen = max(self._audit_seen, entry.id or 0)
            prompt = self.metrics.prompt_label(entry.prompt_name)
            if entry.action == "rollback" and entry.to_status == "active":
                self.metrics.rollbacks.labels(prompt).inc()
            elif entry.action in DECISIONS and entry.to_status in ("approved", "rejected"):
                self.metrics.approvals.labels(prompt, DECISIONS[entry.action]).inc()

    def _refresh_gauges(self, active: Mapping[str, dict[str, Any]]) -> None:
        """Candidates by status, how long approvals have waited, and the active versions, as the
        store has them now."""
        counts = status_counts(self.engine)
        for (prompt, status), n in counts.items():
            self.metrics.candidates.labels(self.metrics.prompt_label(prompt), status).set(n)
        for prompt, status in self._known_statuses - set(counts):
            self.metrics.candidates.labels(self.metrics.prompt_label(prompt), status).set(0)
        self._known_statuses = set(counts)
        self.metrics.show_awaiting_approval(awaiting_approval_since(self.engine))
        for name, raw in active.items():
            self.metrics.show_active(name, raw["version"])


def _now() -> datetime:
    return datetime.now(UTC)
