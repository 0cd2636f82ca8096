"""Judge workers: a thread with its own event loop that judges stored events as they arrive.

Work comes from the store, never from memory: events with no judgment under the current judge
version, newest first, and failed judgments whose retry time has come. A restart therefore
resumes exactly where the last process stopped, and an event the judge could not score is kept
as a `judge_error` and tried again later (the wait doubles up to an hour), never dropped.

Each prompt's caps (`JudgeCaps`: judgments a minute, USD an hour) decide how many judgments may
start; when one binds, the events wait in the store. The hour's judge spend of other processes
(earlier ones, other replicas) is read every second; a replica takes only its partitions' share
of what is left. A backlog pass every few seconds marks events older than the age limit
`expired` (kept and counted, never judged) and measures what is still owed.

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
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from sidecar.errors import LlmError, StoreError
from sidecar.judge.caps import CAPS, HOUR_S, JudgeCaps, JudgingLimits
from sidecar.judge.judge import Judge, judge_for
from sidecar.judge.verdict import InvalidReply
from sidecar.llm.gateway import Gateway, load_litellm
from sidecar.llm.ledger import metering
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.settings import PromptsConfig
from sidecar.store.database import aware
from sidecar.store.judgments import (
    JudgmentRecord,
    PendingEvent,
    active_versions,
    backlog,
    due_judgment_retries,
    expire_events,
    store_judgments,
    unjudged_events,
)
from sidecar.store.spend import SpendTotal, spend_since

log = logging.getLogger(__name__)

MAX_RETRY_WAIT_S = 3600.0
MAX_PROBE_WAIT_S = 300.0
FLUSH_EVERY_S = 0.1
FLUSH_AT = 64
BACKLOG_EVERY_S = 10.0
BACKLOG_DUTY = 0.05
SPEND_READ_EVERY_S = 1.0

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def backlog_pause_s(took_s: float, every_s: float) -> float:
    """The wait after a backlog pass that took `took_s`: at least `every_s`, and long enough
    that passes use at most BACKLOG_DUTY of the time (a deep backlog makes each pass a scan
    of every event still owed a verdict; the chatbot's pod must not pay for it)."""
    return max(every_s, took_s / BACKLOG_DUTY)


def retry_wait_s(failures: int, first_wait_s: float) -> float:
    """How long a failed judgment waits before its next round: doubling, capped at an hour."""
    return min(MAX_RETRY_WAIT_S, first_wait_s * 2 ** max(0, min(failures - 1, 32)))


@dataclass
class _Lane:
    """One managed prompt: its judge, its caps, and where its unjudged events can be.

    Every event at or below `floor` is settled (judged, failed or expired). The current sweep
    has looked at every id in [`below`, `top`]; new events arrive above `top`, older ones wait
    between `floor` and `below`. Each backlog pass starts a new sweep from `floor`, so an event
    whose insert committed after a higher id's is found then."""

    judge: Judge
    limits: JudgingLimits
    caps: JudgeCaps
    floor: int = 0
    top: int = 0
    below: int = 0
    seen_highest: int = 0
    waiting: int = 0
    next_pass_at: float = 0.0
    next_spend_read_at: float = 0.0
    unpriced_told: bool = False
    binding: set[str] = field(default_factory=set)

    def sweep_from(self, floor: int) -> None:
        self.floor = self.top = self.below = floor

    def take(
        self,
        engine: Engine,
        name: str,
        wanted: int,
        partitions: frozenset[int] | None,
        busy: Collection[int],
    ) -> list[PendingEvent]:
        """The newest `wanted` unjudged events: new arrivals first, then the older ones."""
        version = self.judge.version
        found = unjudged_events(engine, name, version, self.top, None, wanted, partitions, busy)
        if len(found) == wanted:
            self.below = found[-1].row_id  # what lies between the old top and these waits too
            self.top = found[0].row_id
            return found
        self.top = max([self.top, self.seen_highest] + [event.row_id for event in found[:1]])
        rest = wanted - len(found)
        if self.below > self.floor:
            older = unjudged_events(
                engine, name, version, self.floor, self.below, rest, partitions, busy
            )
            self.below = older[-1].row_id if len(older) == rest else self.floor
            found += older
        return found


@dataclass
class _Outage:
    """The judge model is down (`failures` probes so far), or not yet known to answer (0);
    the next probe not before `probe_at` (monotonic); `probes`, the events started as probes."""

    failures: int
    probe_at: float
    probes: set[int] = field(default_factory=set)


Owned = Callable[[], frozenset[int] | None]
"""The traffic partitions whose events this replica judges; None: every event (one replica)."""


def every_partition() -> None:
    return None


def whole_budget() -> float:
    return 1.0


class JudgeWorker:
    """Keeps up to 2 x the judge concurrency events in flight; writes verdicts in batches."""

    def __init__(
        self,
        engine: Engine,
        gateway: Gateway,
        prompts: PromptsConfig,
        metrics: Metrics,
        owned: Owned = every_partition,
        clock: Clock = utc_now,
        backlog_every_s: float = BACKLOG_EVERY_S,
        budget_share: Callable[[], float] = whole_budget,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.backlog_every_s = backlog_every_s
        self._budget_share = budget_share
        self.gateway = gateway
        self.metrics = metrics
        settings = gateway.settings
        self.poll_interval_s = settings.judge_poll_interval_s
        self.retry_after_s = settings.judge_retry_after_s
        self.capacity = 2 * settings.judge_concurrency
        self.refill_below = settings.judge_concurrency + 1
        start = clock().timestamp()
        self.lanes = {}
        for spec in prompts.prompts:
            limits = JudgingLimits.of(settings, spec)
            self.lanes[spec.name] = _Lane(
                judge_for(gateway, spec), limits, JudgeCaps(limits, start)
            )
        self._stopping = threading.Event()
        self._drain_limit_s = math.inf
        self._thread = threading.Thread(target=self._main, name="judge", daemon=True)
        self._inflight: dict[int, asyncio.Task[JudgmentRecord]] = {}
        self._pending: list[JudgmentRecord] = []
        self._active: dict[str, int] = {}
        self._owned = owned
        self._share: frozenset[int] | None = None
        self._outage: _Outage | None = _Outage(0, 0.0)  # a first probe: see _follow_outage
        self.failed: BaseException | None = None

    def start(self) -> JudgeWorker:
        for name, lane in self.lanes.items():
            log.info("judging %s: %s", name, lane.limits.describe())
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
        now = self.clock().timestamp()
        for task in done:
            record = task.result()
            self._inflight.pop(record.row_id, None)
            self._pending.append(record)
            self._follow_outage(record)
            lane = self.lanes.get(record.prompt_name)
            if lane is not None:
                spend = record.spend
                lane.caps.finish(now, spend.cost_usd, spend.calls, spend.unpriced_calls)
                self._tell_unpriced(record.prompt_name, lane)

    def _follow_outage(self, record: JudgmentRecord) -> None:
        """A judge model that cannot answer (refused connections, 5xx, timeouts, after the
        gateway's retries) pauses judging: each failed call costs CPU in the chatbot's pod and
        a backlog would be rushed through its retries. One event probes the model after a
        wait that doubles while it stays down (up to 5 minutes); any answer resumes judging.
        Judging starts with such a probe too, so a model that is down from the start costs
        one event's retries, not a full pool's."""
        outage = self._outage
        if outage is None:
            if record.unavailable:
                self._pause(_Outage(0, 0.0), record.error)
            return
        probe = record.row_id in outage.probes
        outage.probes.discard(record.row_id)
        if not record.unavailable:
            if outage.failures:
                log.info("the judge model answers again: judging resumes")
            self._outage = None
        elif not outage.failures:
            self._pause(outage, record.error)
        elif probe:
            outage.failures += 1
            wait = min(MAX_PROBE_WAIT_S, retry_wait_s(outage.failures, self.retry_after_s))
            outage.probe_at = time.monotonic() + wait
            log.info("the judge model still cannot answer; next try in %gs", wait)

    def _pause(self, outage: _Outage, problem: str | None) -> None:
        outage.failures = 1
        outage.probe_at = time.monotonic() + self.retry_after_s
        self._outage = outage
        log.warning(
            "the judge model cannot answer (%s): judging pauses; one event tries it again in %gs",
            problem,
            self.retry_after_s,
        )

    def _tell_unpriced(self, name: str, lane: _Lane) -> None:
        budget = lane.caps.budget
        if budget is None or not budget.unpriced or lane.unpriced_told:
            return
        lane.unpriced_told = True
        held = (
            f"JUDGE_MAX_PER_MINUTE ({lane.limits.max_per_minute}) holds it"
            if lane.limits.max_per_minute is not None
            else "set JUDGE_MAX_PER_MINUTE to hold it"
        )
        log.warning(
            "judge model %s has no price in litellm's cost map: the budget of $%g an hour "
            "cannot hold %s's judging, whose spend shows as unknown; %s",
            self.gateway.roles["judge"].model,
            budget.usd_per_hour,
            name,
            held,
        )

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await asyncio.to_thread(store_judgments, self.engine, batch, self.clock())
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

    def _room(self) -> int:
        """Judgments that may start now: all the room there is, or, while the judge model is
        down, one probe once its wait is over and nothing else is in flight."""
        if self._outage is None:
            return self.capacity - len(self._inflight)
        if self._inflight or time.monotonic() < self._outage.probe_at:
            return 0
        return 1

    async def _refill(self) -> int:
        """Start judging the next events; returns how many were started."""
        room = self._room()
        try:
            self._active = await asyncio.to_thread(active_versions, self.engine)
            pending = await asyncio.to_thread(self._next_events, room)
        except StoreError as exc:
            log.warning("cannot read events to judge: %s", exc)
            return 0
        for lane, event in pending:
            if event.row_id not in self._inflight:
                self._inflight[event.row_id] = asyncio.create_task(self._judge(lane, event))
                if self._outage is not None:
                    self._outage.probes.add(event.row_id)
        return len(pending)

    def _next_events(self, room: int) -> list[tuple[_Lane, PendingEvent]]:
        chosen: list[tuple[_Lane, PendingEvent]] = []
        now = self.clock()
        share = max(1, room // max(1, len(self.lanes)))
        # Judged but not yet written: the store still shows these as due.
        busy = set(self._inflight) | {record.row_id for record in self._pending}
        partitions = self._partitions()
        for name, lane in self.lanes.items():
            if time.monotonic() >= lane.next_pass_at:
                self._backlog_pass(name, lane, now, partitions, busy)
            if time.monotonic() >= lane.next_spend_read_at:
                self._read_spend(name, lane, now)
            if room <= 0:
                continue
            admitted = lane.caps.admit(share, now.timestamp(), self._budget_share())
            events: list[PendingEvent] = []
            try:
                if admitted:
                    version = lane.judge.version
                    events = due_judgment_retries(
                        self.engine, name, version, now, admitted, busy, partitions
                    )
                if admitted > len(events):
                    events += lane.take(self.engine, name, admitted - len(events), partitions, busy)
            finally:
                lane.caps.release(admitted - len(events))
            waiting = lane.waiting > 0 or (0 < admitted == len(events))
            self._show_caps(name, lane, lane.caps.binding if waiting else set())
            chosen.extend((lane, event) for event in events)
        return chosen

    def _backlog_pass(
        self,
        name: str,
        lane: _Lane,
        now: datetime,
        partitions: frozenset[int] | None,
        busy: Collection[int],
    ) -> None:
        """Expire what is too old, and measure what is owed."""
        started = time.monotonic()
        lane.next_pass_at = started + self.backlog_every_s
        version = lane.judge.version
        label = self.metrics.prompt_label(name)
        cutoff = now - timedelta(hours=lane.limits.max_event_age_hours)
        expired = expire_events(
            self.engine, name, version, cutoff, lane.floor, now, partitions, busy
        )
        if expired:
            self.metrics.judge_expired.labels(label).inc(expired)
            log.info(
                "%d events of %s older than %gh expired unjudged",
                expired,
                name,
                lane.limits.max_event_age_hours,
            )
        owed = backlog(self.engine, name, version, lane.floor, partitions)
        lane.waiting = owed.events
        self.metrics.judge_backlog.labels(label).set(owed.events)
        oldest = 0.0 if owed.oldest is None else (now - aware(owed.oldest)).total_seconds()
        self.metrics.judge_oldest_unjudged.labels(label).set(max(0.0, oldest))
        settled = owed.highest if owed.lowest_unjudged is None else owed.lowest_unjudged - 1
        lane.sweep_from(max(lane.floor, min(settled, lane.seen_highest)))
        lane.seen_highest = owed.highest
        finished = time.monotonic()
        lane.next_pass_at = finished + backlog_pause_s(finished - started, self.backlog_every_s)

    def _read_spend(self, name: str, lane: _Lane, now: datetime) -> None:
        """What other processes (earlier ones, other replicas) spent judging this prompt in the
        last hour: the store's total less this process's own."""
        budget = lane.caps.budget
        lane.next_spend_read_at = time.monotonic() + SPEND_READ_EVERY_S
        if budget is None:
            return
        hour = spend_since(self.engine, name, "judge", now - timedelta(seconds=HOUR_S))
        budget.others_usd = max(0.0, hour.cost_usd - budget.own_usd(now.timestamp()))

    def _show_caps(self, name: str, lane: _Lane, binding: set[str]) -> None:
        if binding == lane.binding:
            return
        label = self.metrics.prompt_label(name)
        for cap in CAPS:
            self.metrics.judge_capped.labels(label, cap).set(1 if cap in binding else 0)
        if binding - lane.binding:
            log.debug("judging %s waits for its %s cap", name, " and ".join(sorted(binding)))
        lane.binding = set(binding)

    def _partitions(self) -> frozenset[int] | None:
        """This replica's share now; when it changed, every lane sweeps again from the start,
        as a partition that came over may hold events below the lane's floor."""
        partitions = self._owned()
        if partitions != self._share:
            self._share = partitions
            for lane in self.lanes.values():
                lane.sweep_from(0)
                lane.seen_highest = 0
                lane.next_pass_at = 0.0
        return partitions

    async def _judge(self, lane: _Lane, event: PendingEvent) -> JudgmentRecord:
        """Never raises: every outcome is a record to store, with what it cost."""
        meter = metering()
        base = JudgmentRecord(
            row_id=event.row_id,
            prompt_name=event.prompt_name,
            prompt_version=event.prompt_version,
            judge_version=lane.judge.version,
        )
        unavailable = False
        try:
            verdict = await lane.judge.score(event.inputs, event.output, event.trace)
        except LlmError as exc:
            error, unavailable = str(exc), exc.retryable
        except InvalidReply as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("judging event %d failed unexpectedly", event.row_id)
            error = f"unexpected {type(exc).__name__}: {exc}"
        else:
            spend = SpendTotal(meter.cost_usd, meter.calls, meter.unpriced_calls)
            return replace(base, score=verdict.score, feedback=verdict.feedback, spend=spend)
        wait = retry_wait_s(event.attempts + 1, self.retry_after_s)
        return replace(
            base,
            error=error[:1000],
            next_attempt_at=self.clock() + timedelta(seconds=wait),
            spend=SpendTotal(meter.cost_usd, meter.calls, meter.unpriced_calls),
            unavailable=unavailable,
        )
