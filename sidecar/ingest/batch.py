"""Turn one polled batch of records into a plan: what to store, what to dead-letter, what to
count, and which offsets are safe to commit once the plan is carried out. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sidecar.events import ConsumedEvent
from sidecar.ingest.sampling import SamplingRules, is_sampled
from sidecar.ingest.validation import Rejection, parse_event


class Record(Protocol):
    """The parts of a Kafka consumer record that ingest reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A malformed record and why; it goes to the dead-letter topic untouched but for headers."""

    record: Record
    rejection: Rejection


@dataclass(slots=True)
class BatchPlan:
    consumed: list[ConsumedEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.consumed) + sum(self.outcomes.values())


def plan_batch(records: Iterable[Record], sampling: SamplingRules | float) -> BatchPlan:
    """Validate, then sample by event id at the event's rate (one rate for all when `sampling`
    is a number); invalid and sampled-out records are only counted, kept ones carry the rate."""
    rules = sampling if isinstance(sampling, SamplingRules) else SamplingRules(sampling)
    plan = BatchPlan()
    for record in records:
        position = (record.topic, record.partition)
        plan.next_offsets[position] = max(plan.next_offsets.get(position, 0), record.offset + 1)
        parsed = parse_event(record.value)
        if isinstance(parsed, Rejection):
            plan.dead_letters.append(DeadLetter(record, parsed))
            plan.outcomes[(parsed.prompt_hint or "", "invalid")] += 1
            continue
        rate = rules.rate(parsed.prompt_name, parsed.segment)
        if is_sampled(str(parsed.event_id), rate):
            plan.consumed.append(ConsumedEvent(parsed, record.partition, record.offset, rate))
        else:
            plan.outcomes[(parsed.prompt_name, "sampled_out")] += 1
    return plan
