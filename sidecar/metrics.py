"""Prometheus metrics, one registry per App (no globals), names per DESIGN.md.

Label values stay bounded: a prompt label is a name from CONFIG_FILE, else `_unmanaged` (traffic
may name any prompt; its names never become series). Counters with a fixed set of outcomes start
at 0 with every label set, so `rate()` and ratios have a series before the first event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from sidecar import __version__

PREFIX = "gepa_sidecar_"
UNMANAGED_PROMPT = "_unmanaged"
UNKNOWN_PROMPT = "_unknown"

JUDGE_OUTCOMES = ("ok", "invalid_reply", "provider_error")
RUN_OUTCOMES = ("finished", "failed", "skipped", "not_leader", "interrupted")
SHADOW_OUTCOMES = ("finished", "failed", "not_leader", "interrupted")
PUBLISH_OUTCOMES = ("ok", "failed")


class Metrics:
    """The sidecar's metric families. `managed`: the prompt names of CONFIG_FILE (the only
    prompt label values besides `_unmanaged` and `_unknown`); `publish_targets`: the configured
    targets, whose publish counters start at 0."""

    def __init__(self, managed: Iterable[str], publish_targets: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.managed = frozenset(managed)
        self._awaiting_lock = threading.Lock()
        self._awaiting_labels: set[str] = set()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.build_info = Gauge(
            PREFIX + "build_info",
            "Always 1; the running gepa-sidecar version is its label.",
            ["version"],
            registry=self.registry,
        )
        self.build_info.labels(__version__).set(1)
        self.events_consumed = Counter(
            PREFIX + "events_consumed",
            "Traffic records consumed, by outcome (accepted|sampled_out|invalid|duplicate).",
            ["prompt", "outcome"],
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            PREFIX + "consumer_lag_records",
            "Records between the consumer's position and the end of each assigned partition.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.consumer_unassigned = Gauge(
            PREFIX + "consumer_unassigned_seconds",
            "How long the consumer has waited for the group's assignment (since it subscribed or "
            "lost its partitions); 0 while it is a member.",
            registry=self.registry,
        )
        self.consumer_rejoins = Counter(
            PREFIX + "consumer_rejoins",
            "Times the consumer gave up waiting for the group's assignment and rejoined.",
            registry=self.registry,
        )

        self.judge_score = Histogram(
            PREFIX + "judge_score",
            "Judge scores (0..1) of sampled events, by prompt and the version that answered.",
            ["prompt", "version"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=self.registry,
        )
        self.judge_requests = Counter(
            PREFIX + "judge_requests",
            "Judge attempts by outcome (ok|invalid_reply|provider_error).",
            ["outcome"],
            registry=self.registry,
        )
        self.judge_expired = Counter(
            PREFIX + "judge_expired",
            "Events left unjudged because they were older than JUDGE_MAX_EVENT_AGE_HOURS.",
            ["prompt"],
            registry=self.registry,
        )
        self.judge_backlog = Gauge(
            PREFIX + "judge_backlog_events",
            "Events this replica still owes a verdict (never judged, or failed and waiting).",
            ["prompt"],
            registry=self.registry,
        )
        self.judge_oldest_unjudged = Gauge(
            PREFIX + "judge_oldest_unjudged_seconds",
            "Age of the oldest event still owed a verdict (its traffic timestamp); 0 if none.",
            ["prompt"],
            registry=self.registry,
        )
        self.judge_capped = Gauge(
            PREFIX + "judge_capped",
            "1 while a cap (budget|rate) holds back judging that is waiting, by prompt.",
            ["prompt", "cap"],
            registry=self.registry,
        )
        self.llm_request_duration = Histogram(
            PREFIX + "llm_request_duration_seconds",
            "Wall time of each model call (each attempt), by role.",
            ["role"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            PREFIX + "llm_tokens",
            "Tokens used by model calls, by role and type (prompt|completion).",
            ["role", "type"],
            registry=self.registry,
        )
        self.llm_cost = Counter(
            PREFIX + "llm_cost_usd",
            "USD spent on model calls by role, from litellm's cost map (0 for unpriced models).",
            ["role"],
            registry=self.registry,
        )
        self.llm_errors = Counter(
            PREFIX + "llm_errors",
            "Model calls that failed for good (after the gateway's retries), by role and kind "
            "(the error's class, e.g. AuthenticationError, APIConnectionError, timeout).",
            ["role", "kind"],
            registry=self.registry,
        )
        self.optimization_runs = Counter(
            PREFIX + "optimization_runs",
            "GEPA runs by outcome (finished|failed|skipped: too little traffic|not_leader|"
            "interrupted: a stop cut it short).",
            ["outcome"],
            registry=self.registry,
        )
        self.optimization_metric_calls = Counter(
            PREFIX + "optimization_metric_calls",
            "Metric calls (a task call and its judgment) paid by GEPA runs.",
            registry=self.registry,
        )
        self.frontier_size = Gauge(
            PREFIX + "frontier_size",
            "Candidates on the Pareto frontier the last run left, by prompt.",
            ["prompt"],
            registry=self.registry,
        )
        self.candidates = Gauge(
            PREFIX + "candidates",
            "Prompt versions by lifecycle status.",
            ["prompt", "status"],
            registry=self.registry,
        )
        self.active_prompt_version = Gauge(
            PREFIX + "active_prompt_version",
            "The version each prompt has active (published), from the store.",
            ["prompt"],
            registry=self.registry,
        )
        self.shadow_score_delta = Gauge(
            PREFIX + "shadow_score_delta",
            "Mean paired score of a candidate in shadow minus the champion's, same events.",
            ["prompt", "version"],
            registry=self.registry,
        )
        self.shadow_pairs = Gauge(
            PREFIX + "shadow_pairs",
            "Paired shadow comparisons a candidate in shadow has so far.",
            ["prompt", "version"],
            registry=self.registry,
        )
        self.shadow_passes = Counter(
            PREFIX + "shadow_passes",
            "Shadow evaluation passes by outcome (finished|failed|not_leader|interrupted).",
            ["outcome"],
            registry=self.registry,
        )
        self.publishes = Counter(
            PREFIX + "publishes",
            "Deliveries of an activated prompt version, by target (file|kafka|http) and outcome "
            "(ok|failed|already_delivered: found there when retried after a crash).",
            ["target", "outcome"],
            registry=self.registry,
        )
        self.rollbacks = Counter(
            PREFIX + "rollbacks",
            "Rollbacks to an earlier version, by prompt.",
            ["prompt"],
            registry=self.registry,
        )
        self.approvals = Counter(
            PREFIX + "approvals",
            "A person's decisions on candidates, by prompt and decision "
            "(approved|forced|rejected).",
            ["prompt", "decision"],
            registry=self.registry,
        )
        self.ingest_paused = Gauge(
            PREFIX + "ingest_paused",
            "1 while the consumer has paused its partitions because storing is behind.",
            registry=self.registry,
        )
        self.awaiting_approval_since = Gauge(
            PREFIX + "awaiting_approval_since_timestamp_seconds",
            "Unix time at which the oldest candidate now awaiting approval entered that status, "
            "by prompt (no series while none waits).",
            ["prompt"],
            registry=self.registry,
        )
        self._start_at_zero(publish_targets)

    def _start_at_zero(self, publish_targets: Iterable[str]) -> None:
        for outcome in JUDGE_OUTCOMES:
            self.judge_requests.labels(outcome)
        for prompt in self.managed:
            self.judge_expired.labels(prompt)
            for cap in ("budget", "rate"):
                self.judge_capped.labels(prompt, cap).set(0)
        for outcome in RUN_OUTCOMES:
            self.optimization_runs.labels(outcome)
        for outcome in SHADOW_OUTCOMES:
            self.shadow_passes.labels(outcome)
        for target in publish_targets:
            for outcome in PUBLISH_OUTCOMES:
                self.publishes.labels(target, outcome)

    def prompt_label(self, prompt: str | None) -> str:
        """A prompt's label value: its name when CONFIG_FILE manages it, else `_unmanaged`
        (`_unknown` when a record names none), so traffic cannot choose label values."""
        if not prompt:
            return UNKNOWN_PROMPT
        return prompt if prompt in self.managed else UNMANAGED_PROMPT

    def count_outcomes(self, counts: Mapping[tuple[str, str], int]) -> None:
        for (prompt, outcome), n in counts.items():
            if n:
                self.events_consumed.labels(self.prompt_label(prompt), outcome).inc(n)

    def show_active(self, prompt: str, version: int) -> None:
        """The active version's gauge, and its score histogram from zero on: a series born with
        its first judgments would make `rate()` over them read 0/0 until the next ones."""
        label = self.prompt_label(prompt)
        self.active_prompt_version.labels(label).set(version)
        self.judge_score.labels(label, str(version))

    def show_awaiting_approval(self, since: Mapping[str, datetime]) -> None:
        """Set the awaiting-approval gauge from the store's answer (prompt name -> when its
        oldest waiting candidate started waiting); prompts with none waiting lose their series."""
        oldest: dict[str, float] = {}
        for prompt, at in since.items():
            label = self.prompt_label(prompt)
            oldest[label] = min(oldest.get(label, at.timestamp()), at.timestamp())
        with self._awaiting_lock:
            for label, timestamp in oldest.items():
                self.awaiting_approval_since.labels(label).set(timestamp)
            for label in self._awaiting_labels - set(oldest):
                self.awaiting_approval_since.remove(label)
            self._awaiting_labels = set(oldest)

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the lag series of partitions this consumer no longer owns."""
        for topic, partition in partitions:
            self.consumer_lag.remove(topic, str(partition))
