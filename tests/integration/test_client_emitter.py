"""TrafficEmitter against a real broker: what arrives is a valid TrafficEvent keyed by its id,
sampled as the sidecar samples, flushed on close; with the broker down or the input wrong, emit
returns at once and the loss is counted, never raised."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sidecar.client import TrafficEmitter
from sidecar.events import MAX_EVENT_BYTES, TrafficEvent
from sidecar.ingest.batch import plan_batch
from sidecar.ingest.sampling import is_sampled
from sidecar.runtime.broker import free_port
from tests.conftest import Topics
from tests.helpers import read_all, scaled, wait_until

NAME = "customer-care"


def emit_many(emitter: TrafficEmitter, count: int, **fields: Any) -> list[bool]:
    return [
        emitter.emit(
            {"user_message": f"Where is order {index}?"},
            f"It ships tomorrow ({index}).",
            3,
            **fields,
        )
        for index in range(count)
    ]


def within_deadline(action: Callable[[], object], seconds: float) -> None:
    """Run `action` on a thread and fail the test if it has not returned by the (scaled)
    deadline: a guard against blocking, not a speed measurement."""
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(scaled(seconds)), "the call blocked"
    assert not failure, failure


@pytest.fixture
def emitter(kafka_bootstrap: str, topics: Topics) -> Iterator[TrafficEmitter]:
    made = TrafficEmitter(kafka_bootstrap, topics.traffic, prompt_name=NAME)
    yield made
    made.close(scaled(10))


def test_emitted_events_arrive_valid_and_keyed_by_their_id(
    kafka_bootstrap: str, topics: Topics, emitter: TrafficEmitter
) -> None:
    trace = {"model": "openai/local", "latency_ms": 812, "steps": []}
    queued = emit_many(emitter, 20, trace=trace, metadata={"segment": "shipping"})
    assert queued == [True] * 20
    wait_until(lambda: emitter.sent == 20, 60, "20 events acknowledged")
    records = read_all(kafka_bootstrap, topics.traffic, 20)
    events = [TrafficEvent.model_validate_json(record.value) for record in records]
    assert [record.key for record in records] == [event.key for event in events]
    assert {event.inputs["user_message"] for event in events} == {
        f"Where is order {index}?" for index in range(20)
    }
    first = events[0]
    assert (first.schema_version, first.prompt_name, first.prompt_version) == (1, NAME, 3)
    assert (first.trace, first.segment, first.event_id.version) == (trace, "shipping", 4)
    assert first.timestamp.utcoffset() is not None
    assert (emitter.dropped, emitter.dropped_by_reason) == (0, {})


def test_the_app_and_the_sidecar_keep_the_same_events_at_the_same_rate(
    kafka_bootstrap: str, topics: Topics
) -> None:
    with TrafficEmitter(
        kafka_bootstrap, topics.traffic, prompt_name=NAME, sample_rate=0.3
    ) as emitter:
        queued = emit_many(emitter, 300)
        wait_until(lambda: emitter.sent == sum(queued), 60, "the sampled events acknowledged")
    assert emitter.sampled_out == queued.count(False) == 300 - emitter.sent
    assert 30 < emitter.sent < 150
    records = read_all(kafka_bootstrap, topics.traffic, emitter.sent)
    assert len(records) == emitter.sent
    at_the_same_rate = plan_batch(records, 0.3)
    assert len(at_the_same_rate.consumed) == emitter.sent
    assert not at_the_same_rate.outcomes and not at_the_same_rate.dead_letters
    at_a_lower_rate = plan_batch(records, 0.1)
    kept = {str(consumed.event.event_id) for consumed in at_a_lower_rate.consumed}
    ids = [TrafficEvent.model_validate_json(record.value).event_id for record in records]
    assert kept == {str(event_id) for event_id in ids if is_sampled(str(event_id), 0.1)}


def test_close_flushes_what_was_queued(kafka_bootstrap: str, topics: Topics) -> None:
    emitter = TrafficEmitter(kafka_bootstrap, topics.traffic, prompt_name=NAME)
    assert all(emit_many(emitter, 200))
    emitter.close(scaled(20))
    assert (emitter.sent, emitter.dropped, emitter.pending) == (200, 0, 0)
    assert len(read_all(kafka_bootstrap, topics.traffic, 200)) == 200
    assert emitter.emit({"user_message": "late"}, "too late", 3) is False
    assert emitter.dropped_by_reason == {"closed": 1}


def test_with_the_broker_down_emit_never_blocks_and_counts_what_it_drops() -> None:
    emitter = TrafficEmitter(f"127.0.0.1:{free_port()}", prompt_name=NAME, queue_size=5)
    results: list[bool] = []
    within_deadline(lambda: results.extend(emit_many(emitter, 500)), 10)
    queued = results.count(True)
    assert queued == 5, "the queue holds 5 while the sender tries to connect"
    assert emitter.dropped_by_reason == {"queue_full": 500 - queued}
    within_deadline(lambda: emitter.close(1.0), 10)
    assert emitter.sent == 0
    assert emitter.dropped_by_reason == {"queue_full": 500 - queued, "unsent": queued}


def test_security_options_reach_the_producer(kafka_bootstrap: str, topics: Topics) -> None:
    """SSL against the plaintext listener: if the option were dropped, the events would
    arrive."""
    emitter = TrafficEmitter(
        kafka_bootstrap, topics.traffic, prompt_name=NAME, security_protocol="SSL"
    )
    within_deadline(lambda: emit_many(emitter, 10), 10)
    within_deadline(lambda: emitter.close(1.0), 20)
    assert emitter.sent == 0
    assert emitter.dropped_by_reason == {"unsent": 10}


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (({"user_message": 17}, "ok", 3), "invalid"),
        (({17: "where?"}, "ok", 3), "invalid"),
        ((["where?"], "ok", 3), "invalid"),
        (({"user_message": "where?"}, None, 3), "invalid"),
        (({"user_message": "where?"}, "ok", 0), "invalid"),
        (({"user_message": "where?"}, "ok", "3"), "invalid"),
        (({"user_message": "where?"}, "ok", True), "invalid"),
        (({"user_message": "where?"}, "x" * MAX_EVENT_BYTES, 3), "too_large"),
    ],
)
def test_bad_input_is_dropped_and_counted_never_raised(
    emitter: TrafficEmitter, arguments: tuple[Any, ...], reason: str
) -> None:
    assert emitter.emit(*arguments) is False
    assert emitter.dropped_by_reason == {reason: 1}


def cyclic() -> dict[str, Any]:
    metadata: dict[str, Any] = {"segment": "shipping"}
    metadata["self"] = metadata
    return metadata


@pytest.mark.parametrize(
    "fields",
    [
        {"metadata": {"when": object()}},
        {"metadata": cyclic()},
        {"trace": "not a dict"},
        {"metadata": ["segment"]},
    ],
)
def test_bad_trace_or_metadata_is_dropped_and_counted(
    emitter: TrafficEmitter, fields: dict[str, Any]
) -> None:
    assert emitter.emit({"user_message": "where?"}, "ok", 3, **fields) is False
    assert emitter.dropped_by_reason == {"invalid": 1}
    assert emitter.emit({"user_message": "where?"}, "ok", 3) is True
    wait_until(lambda: emitter.sent == 1, 60, "the good event after a bad one")
