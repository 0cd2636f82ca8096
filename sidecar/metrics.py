"""Prometheus metrics, one registry per App (no globals), names per DESIGN.md."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "gepa_sidecar_"
MAX_PROMPT_LABELS = 50
OVERFLOW_LABEL = "_other"
UNKNOWN_PROMPT = "_unknown"


class Metrics:
    """The sidecar's metric families. Prompt labels are bounded: past the cap they read `_other`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._prompts: set[str] = set()
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
        self.optimization_runs = Counter(
            PREFIX + "optimization_runs",
            "GEPA runs by outcome (finished|failed|skipped: too little traffic|not_leader).",
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
            "Shadow evaluation passes by outcome (finished|failed|not_leader).",
            ["outcome"],
            registry=self.registry,
        )
        self.publishes = Counter(
            PREFIX + "publishes",
            "Deliveries of an activated prompt version, by target (file|kafka|http) and outcome.",
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

    def prompt_label(self, prompt: str | None) -> str:
        """A label value for a prompt name, bounded so traffic cannot explode cardinality."""
        if not prompt:
            return UNKNOWN_PROMPT
        if prompt in self._prompts:
            return prompt
        if len(self._prompts) >= MAX_PROMPT_LABELS:
            return OVERFLOW_LABEL
        self._prompts.add(prompt)
        return prompt

    def count_outcomes(self, counts: Mapping[tuple[str, str], int]) -> None:
        for (prompt, outcome), n in counts.items():
            if n:
                self.events_consumed.labels(self.prompt_label(prompt), outcome).inc(n)
