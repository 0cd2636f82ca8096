"""R1: malformed records drawn by hypothesis, interleaved with valid events, through the real
broker into a `gepa-sidecar run` child on PostgreSQL. The child stays alive and healthy, every
malformed record reaches the dead-letter topic with the reason its defect calls for, and every
valid event is stored once."""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from kafka import KafkaProducer
from sqlalchemy import Engine

from sidecar.ingest.dead_letter import (
    DETAIL_HEADER,
    PREVIEW_BYTES,
    REASON_HEADER,
    SOURCE_HEADER,
    TRUNCATED_HEADER,
)
from sidecar.store.repository import ingest_totals, stored_event_ids
from tests.conftest import Topics
from tests.helpers import make_event, records, scaled, wait_until
from tests.processes import Start, sidecar_env
from tests.reliability.malformed_corpus import Malformed, corpus, encoded, oversized
from tests.reliability.rows import Row, record, sized

SEED = 1212
Position = str  # "topic/partition/offset", as the dead-letter source header writes it


def produce_interleaved(
    bootstrap: str, topic: str, stream: list[tuple[Malformed | None, bytes, bytes | None]]
) -> list[Position]:
    """Send (malformed or None for valid, value, key) in order; the position of each record."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    futures = [
        producer.send(topic, key=key, value=value, headers=bad.headers if bad else None)
        for bad, value, key in stream
    ]
    producer.flush()
    producer.close()
    return [f"{m.topic}/{m.partition}/{m.offset}" for m in (f.get() for f in futures)]


def the_stream(size: int) -> tuple[list[tuple[Malformed | None, bytes, bytes | None]], set[str]]:
    """Each malformed record next to a valid event, plus a few oversized ones; valid ids."""
    rng = random.Random(SEED)
    stream: list[tuple[Malformed | None, bytes, bytes | None]] = []
    for pair in corpus(size, SEED):
        stream.append((pair.bad, pair.bad.value or b"", pair.bad.key))
        stream.append((None, encoded(pair.good), pair.good["event_id"].encode()))
    for _ in range(sized(ci=2, full=10)):
        value = oversized(make_event(rng), rng.randint(1, 4096))
        stream.insert(
            rng.randrange(len(stream)), (Malformed("too_large", value, None, []), value, None)
        )
    valid = {key.decode() for bad, _, key in stream if bad is None and key is not None}
    return stream, valid


def dead_letter_problems(
    expected: dict[Position, Malformed], found: list[Any]
) -> tuple[list[str], int]:
    """What is wrong with the dead-letter topic (empty when all is right), and how many
    records it holds twice (a redelivery)."""
    problems: list[str] = []
    seen: Counter[Position] = Counter()
    for letter in found:
        headers = dict(letter.headers)
        source = headers[SOURCE_HEADER].decode()
        seen[source] += 1
        bad = expected.get(source)
        if bad is None:
            problems.append(f"{source} was dead-lettered but is valid")
            continue
        if headers[REASON_HEADER].decode() != bad.reason or not headers[DETAIL_HEADER]:
            problems.append(f"{source}: {headers[REASON_HEADER]!r}, expected {bad.reason}")
        value = bad.value or b""
        if TRUNCATED_HEADER in headers:
            value = value[:PREVIEW_BYTES]
        if (letter.value or b"") != value or letter.headers[: len(bad.headers)] != bad.headers:
            problems.append(f"{source}: value or headers changed on the way")
    problems += [f"{source} never dead-lettered" for source in expected if source not in seen]
    return problems, sum(count - 1 for count in seen.values())


def test_malformed_records_are_dead_lettered_and_valid_events_stored(
    kafka_bootstrap: str,
    topics: Topics,
    postgres_url: str,
    migrated_engine: Callable[[str], Engine],
    start_sidecar: Start,
) -> None:
    stream, valid = the_stream(sized(ci=100, full=1000))
    positions = produce_interleaved(kafka_bootstrap, topics.traffic, stream)
    expected = {pos: bad for pos, (bad, _, _) in zip(positions, stream, strict=True) if bad}
    engine = migrated_engine(postgres_url)
    sidecar = start_sidecar(sidecar_env(kafka_bootstrap, topics, postgres_url))

    def settled() -> bool:
        totals = ingest_totals(engine)
        return sidecar.process.poll() is not None or (
            totals["invalid"] >= len(expected) and totals["accepted"] >= len(valid)
        )

    with contextlib.suppress(AssertionError):  # a timeout is reported by the row and asserts
        wait_until(settled, timeout=120, what="every record consumed")
    alive = sidecar.process.poll() is None
    healthy = alive and httpx.get(f"{sidecar.base_url}/healthz", timeout=scaled(10)).json()
    stored = stored_event_ids(engine)
    problems, redelivered = dead_letter_problems(expected, records(kafka_bootstrap, topics.dlq))
    lost = len(valid - set(stored))
    status = healthy["status"] if healthy else "unanswered"
    passed = status == "ok" and not problems and lost == 0 and len(stored) == len(valid)
    reasons = Counter(bad.reason for bad in expected.values())
    record(
        Row(
            row="R1",
            test="test_malformed_records_are_dead_lettered_and_valid_events_stored",
            load=f"{len(expected)} malformed + {len(valid)} valid records, interleaved, "
            "through the broker to a `gepa-sidecar run` child on PostgreSQL",
            faults=f"hypothesis-drawn (seed {SEED}): "
            + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
            + "; arbitrary keys and headers",
            goal="0 crashes, 100% dead-lettered with a reason, 0 valid events lost",
            result=f"process {'alive' if alive else 'DIED'}, /healthz {status}; "
            f"{len(expected) - sum('never' in p for p in problems)}/{len(expected)} "
            f"dead-lettered, {len(problems)} wrong; {len(valid) - lost}/{len(valid)} valid stored",
            passed=passed,
            lost=lost,
            duplicated=redelivered + len(stored) - len(set(stored)),
        )
    )
    assert alive, sidecar.log.read_text()[-3000:]
    assert status == "ok", healthy
    totals = ingest_totals(engine)
    assert sorted(stored) == sorted(valid), totals
    assert problems == []
    assert (totals["accepted"], totals["duplicate"]) == (len(valid), 0)
    assert totals["invalid"] == len(expected) + redelivered
