"""The jobs inside `gepa-sidecar run`: `optimize`, one GEPA run per managed prompt on
OPTIMIZE_SCHEDULE, and `shadow`, one shadow pass per managed prompt on SHADOW_SCHEDULE (each in
seconds, or a cron expression in UTC).

Single-flight twice over: a job never overlaps itself in a process (APScheduler
`max_instances=1`, missed runs coalesced), and on PostgreSQL a session advisory lock per job
elects one leader among replicas, so only one optimizes, or shadows, and pays. SQLite is a
one-replica database.

`stop(timeout)` interrupts the run or pass in flight at its next step (recorded `interrupted`;
what it paid for stays cached) and waits for it at most `timeout` seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.optimize.engine import NotEnoughTraffic, OptimizationRun
from sidecar.optimize.interrupt import Interrupt, Interrupted
from sidecar.promote.lifecycle import Status
from sidecar.settings import PromptsConfig, PromptSpec, Settings
from sidecar.shadow.runner import ShadowPass
from sidecar.store.awaiting import awaiting_approval_since
from sidecar.store.candidates import status_counts
from sidecar.store.leadership import OPTIMIZER_LOCK, SHADOW_LOCK, leadership

log = logging.getLogger(__name__)


def trigger_for(schedule: str) -> IntervalTrigger | CronTrigger:
    if schedule.isdigit():
        return IntervalTrigger(seconds=int(schedule))
    return CronTrigger.from_crontab(schedule, timezone="UTC")


class JobScheduler:
    """Owns the background scheduler and its two jobs; `start()` and `stop()` bracket `run`."""

    def __init__(
        self, engine: Engine, settings: Settings, prompts: PromptsConfig, metrics: Metrics
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.prompts = prompts
        self.metrics = metrics
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._interrupt = Interrupt()
        self._busy = threading.Condition()
        self._jobs = 0

    def start(self) -> JobScheduler:
        if self.prompts.prompts:
            self._scheduler.add_job(
                self.run_once,
                trigger_for(self.settings.optimize_schedule),
                id="optimize",
                max_instances=1,
                coalesce=True,
            )
            self._scheduler.add_job(
                self.shadow_once,
                trigger_for(self.settings.shadow_schedule),
                id="shadow",
                max_instances=1,
                coalesce=True,
            )
            self._scheduler.start()
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Start no more jobs, interrupt the one in flight, and wait for it at most `timeout`
        seconds; False when it is still running then (its thread is left to end alone)."""
        self._interrupt.set(timeout)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        with self._busy:
            return self._busy.wait_for(lambda: self._jobs == 0, timeout)

    @property
    def alive(self) -> bool:
        """False when the scheduler's thread died while it should be running."""
        thread = getattr(self._scheduler, "_thread", None)  # BackgroundScheduler's main loop
        return not self._scheduler.running or (thread is not None and thread.is_alive())

    @contextmanager
    def _job(self) -> Iterator[bool]:
        """Counts the job while it runs (`stop` waits for it); yields False once stopping."""
        with self._busy:
            self._jobs += 1
        try:
            yield not self._interrupt.is_set()
        finally:
            with self._busy:
                self._jobs -= 1
                self._busy.notify_all()

    def run_once(self) -> None:
        """One run per managed prompt, if this replica leads; never raises."""
        with self._job() as going:
            if not going:
                return
            with leadership(self.engine, OPTIMIZER_LOCK) as leader:
                if not leader:
                    self.metrics.optimization_runs.labels("not_leader").inc()
                    log.info("another replica holds the optimizer lock; skipping this turn")
                    return
                for spec in self.prompts.prompts:
                    if not self._interrupt.is_set():
                        self._run(spec)
            self._refresh_candidates()

    def _run(self, spec: PromptSpec) -> None:
        run = OptimizationRun(self.engine, self.settings, spec, interrupt=self._interrupt)
        try:
            report = run_with_models(run.execute())
        except NotEnoughTraffic as exc:
            self.metrics.optimization_runs.labels("skipped").inc()
            log.info("optimize skipped: %s", exc)
            return
        except Interrupted as exc:
            self.metrics.optimization_runs.labels("interrupted").inc()
            log.info("optimize %s: run %d interrupted: %s", spec.name, run.run_id, exc)
            return
        except Exception:
            self.metrics.optimization_runs.labels("failed").inc()
            log.exception("optimize run for %s failed", spec.name)
            return
        self.metrics.optimization_runs.labels(report.outcome).inc()
        self.metrics.optimization_metric_calls.inc(report.metric_calls)
        if report.outcome == "failed":
            log.warning(
                "optimize %s: run %d failed after %d iterations: %s",
                spec.name,
                report.run_id,
                report.iterations,
                report.error,
            )
            return
        label = self.metrics.prompt_label(spec.name)
        self.metrics.frontier_size.labels(label).set(len(report.frontier))
        log.info(
            "optimize %s: run %d stopped by %s after %d metric calls; best v%d %.3f, proposed %s",
            spec.name,
            report.run_id,
            report.stop_reason,
            report.metric_calls,
            report.best_version,
            report.best_score,
            report.proposed or "none",
        )

    def shadow_once(self) -> None:
        """One shadow pass per managed prompt, if this replica leads; never raises."""
        with self._job() as going:
            if not going:
                return
            with leadership(self.engine, SHADOW_LOCK) as leader:
                if not leader:
                    self.metrics.shadow_passes.labels("not_leader").inc()
                    log.info("another replica holds the shadow lock; skipping this turn")
                    return
                for spec in self.prompts.prompts:
                    if not self._interrupt.is_set():
                        self._shadow(spec)
            self._refresh_candidates()

    def _shadow(self, spec: PromptSpec) -> None:
        shadow = ShadowPass(
            self.engine, self.settings, spec, self.metrics, interrupt=self._interrupt
        )
        try:
            report = run_with_models(shadow.execute())
        except Interrupted as exc:
            self.metrics.shadow_passes.labels("interrupted").inc()
            log.info("shadow pass for %s interrupted: %s", spec.name, exc)
            return
        except Exception:
            self.metrics.shadow_passes.labels("failed").inc()
            log.exception("shadow pass for %s failed", spec.name)
            return
        self.metrics.shadow_passes.labels("finished").inc()
        log.info(
            "shadow %s: %d candidates against champion %s; %d metric calls, $%.4f%s",
            spec.name,
            len(report.candidates),
            f"v{report.champion_version}" if report.champion_version else "none",
            report.metric_calls,
            report.cost_usd,
            f", cut by the budget ({report.stop_reason})" if report.stop_reason else "",
        )

    def _refresh_candidates(self) -> None:
        """Every status of every prompt from the store, 0 where none is left (a version that
        left `shadow` must not keep counting there)."""
        try:
            counts = status_counts(self.engine)
            self.metrics.show_awaiting_approval(awaiting_approval_since(self.engine))
        except Exception:
            log.exception("cannot count candidates")
            return
        for prompt in {prompt for prompt, _ in counts}:
            label = self.metrics.prompt_label(prompt)
            for status in Status:
                self.metrics.candidates.labels(label, status.value).set(
                    counts.get((prompt, status.value), 0)
                )
