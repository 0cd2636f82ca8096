"""Judge workers: a thread with its own event loop that judges stored events as they arrive.

Work comes from the store, never from memory: events with no judgment under the current judge
version, and failed judgments whose retry time has come. A restart therefore resumes exactly
where the last process stopped, and an event the judge could not score is kept as a
`judge_error` and tried again later (the wait doubles up to an hour), never dropped.

Replicas on one PostgreSQL share the work as they share the topic: each judges the events
consumed from the partitions its consumer owns now (`owned`), so every event is judged by one
replica; a partition that moves over is judged from its oldest unjudged event by its new owner.
Only what was in flight when a rebalance moved its partition can be judged twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from sidecar.errors import LlmError, StoreError
from sidecar.judge.judge import Judge, judge_for
from sidecar.judge.verdict import InvalidReply
from sidecar.llm.gateway import Gateway, load_litellm
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.settings import PromptsConfig
from sidecar.store.judgments import (
    JudgmentRecord,
    PendingEvent,
    active_versions,
    due_judgment_retries,
    store_judgments,
    unjudged_events,
)

log = logging.getLogger(__name__)

MAX_RETRY_WAIT_S = 3600.0
FLUSH_EVERY_S = 0.1
FLUSH_AT = 64


def retry_wait_s(failures: int, first_wait_s: float) -> float:
    """How long a failed judgment waits before its next round: doubling, capped at an hour."""
    return min(MAX_RETRY_WAIT_S, first_wait_s * 2 ** max(0, min(failures - 1, 32)))


@dataclass
class _Lane:
    """One managed prompt: its judge and how far through its events the worker has read."""

    judge: Judge
    cursor: int = 0


Owned = Callable[[], frozenset[int] | None]
"""The traffic partitions whose events this replica judges; None: every event (one replica)."""


def every_partition() -> None:
    return None


class JudgeWorker:
    """Keeps up to 2 x the judge concurrency events in flight; writes verdicts in batches."""

    def __init__(
        self,
        engine: Engine,
        gateway: Gateway,
        prompts: PromptsConfig,
        metrics: Metrics,
        owned: Owned = every_partition,
    ) -> None:
        self.engine = engine
        self.gateway = gateway
        self.metrics = metrics
        settings = gateway.settings
        self.poll_interval_s = settings.judge_poll_interval_s
        self.retry_after_s = settings.judge_retry_after_s
        self.capacity = 2 * settings.judge_concurrency
        self.refill_below = settings.judge_concurrency + 1
        self.lanes = {spec.name: _Lane(judge_for(gateway, spec)) for spec in prompts.prompts}
        self._stopping = threading.Event()
        self._drain_limit_s = math.inf
        self._thread = threading.Thread(target=self._main, name="judge", daemon=True)
        self._inflight: dict[int, asyncio.Task[JudgmentRecord]] = {}
        self._pending: list[JudgmentRecord] = []
        self._active: dict[str, int] = {}
        self._owned = owned
        self._share: frozenset[int] | None = None
        self.failed: BaseException | None = None

    def start(self) -> JudgeWorker:
        if self.lanes:
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop taking work, let in-flight calls finish (for at most half of `timeout`: the rest
        is for writing what is done), and wait; False when the thread still runs after
        `timeout` (it is a daemon, left to end alone)."""
        self._drain_limit_s = timeout / 2
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            run_with_models(self._run())
        except BaseException as exc:
            self.failed = exc
            log.exception("judge worker stopped on an unexpected error")

    async def _run(self) -> None:
        await asyncio.to_thread(load_litellm)
        last_flush = time.monotonic()
        idle_until = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if len(self._inflight) < self.refill_below and now >= idle_until:
                started = await self._refill()
                if not started:
                    idle_until = now + self.poll_interval_s
            if self._inflight:
                done, _ = await asyncio.wait(
                    self._inflight.values(),
                    timeout=FLUSH_EVERY_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                self._collect(done)
            else:
                await asyncio.sleep(min(FLUSH_EVERY_S, max(0.0, idle_until - time.monotonic())))
            if self._pending and (
                len(self._pending) >= FLUSH_AT or time.monotonic() - last_flush >= FLUSH_EVERY_S
            ):
                await self._flush()
                last_flush = time.monotonic()
        if self._inflight:
            done, _ = await asyncio.wait(self._inflight.values(), timeout=self._drain_s())
            self._collect(done)
            for task in self._inflight.values():
                task.cancel()
        await self._flush()

    def _drain_s(self) -> float:
        return min(10.0, self.gateway.settings.llm_timeout_s + 1.0, self._drain_limit_s)

    def _collect(self, done: set[asyncio.Task[JudgmentRecord]]) -> None:
        for task in done:
            record = task.result()
            self._inflight.pop(record.row_id, None)
            self._pending.append(record)

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await asyncio.to_thread(store_judgments, self.engine, batch, datetime.now(UTC))
        except StoreError as exc:
            log.warning("cannot store %d judgments yet: %s", len(batch), exc)
            self._pending = batch + self._pending
            return
        for record in batch:
            if record.error is None and record.score is not None:
                self.metrics.judge_score.labels(
                    self.metrics.prompt_label(record.prompt_name),
                    self._version_label(record.prompt_name, record.prompt_version),
                ).observe(record.score)

    def _version_label(self, prompt: str, version: int) -> str:
        """Only the active version gets its own label value; others share `_other`."""
        return str(version) if self._active.get(prompt) == version else "_other"

    async def _refill(self) -> int:
        """Start judging the next events; returns how many were started."""
        room = self.capacity - len(self._inflight)
        try:
            self._active = await asyncio.to_thread(active_versions, self.engine)
            pending = await asyncio.to_thread(self._next_events, room)
        except StoreError as exc:
            log.warning("cannot read events to judge: %s", exc)
            return 0
        for lane, event in pending:
            if event.row_id not in self._inflight:
                self._inflight[event.row_id] = asyncio.create_task(self._judge(lane, event))
        return len(pending)

    def _next_events(self, room: int) -> list[tuple[_Lane, PendingEvent]]:
        chosen: list[tuple[_Lane, PendingEvent]] = []
        now = datetime.now(UTC)
        share = max(1, room // max(1, len(self.lanes)))
        # Judged but not yet written: the store still shows these as due.
        busy = set(self._inflight) | {record.row_id for record in self._pending}
        partitions = self._partitions()
        for name, lane in self.lanes.items():
            version = lane.judge.version
            retries = due_judgment_retries(self.engine, name, version, now, share, busy, partitions)
            fresh = unjudged_events(
                self.engine, name, version, lane.cursor, max(0, share - len(retries)), partitions
            )
            if fresh:
                lane.cursor = fresh[-1].row_id
            chosen.extend((lane, event) for event in retries + fresh)
        return chosen[:room]

    def _partitions(self) -> frozenset[int] | None:
        """This replica's share now; when it changed, every lane reads again from the start,
        as a partition that came over may hold events older than the cursor."""
        partitions = self._owned()
        if partitions != self._share:
            self._share = partitions
            for lane in self.lanes.values():
                lane.cursor = 0
        return partitions

    async def _judge(self, lane: _Lane, event: PendingEvent) -> JudgmentRecord:
        """Never raises: every outcome is a record to store."""
        base = JudgmentRecord(
            row_id=event.row_id,
            prompt_name=event.prompt_name,
            prompt_version=event.prompt_version,
            judge_version=lane.judge.version,
        )
        try:
            verdict = await lane.judge.score(event.inputs, event.output, event.trace)
        except (LlmError, InvalidReply) as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("judging event %d failed unexpectedly", event.row_id)
            error = f"unexpected {type(exc).__name__}: {exc}"
        else:
            return replace(base, score=verdict.score, feedback=verdict.feedback)
        wait = retry_wait_s(event.attempts + 1, self.retry_after_s)
        return replace(
            base,
            error=error[:1000],
            next_attempt_at=datetime.now(UTC) + timedelta(seconds=wait),
        )
