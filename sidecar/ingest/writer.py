"""The ingest writer: a second process that validates, samples, dead-letters and stores the
records the consumer fetched, so the two halves run on two cores instead of sharing one GIL.

The consumer process sends a batch of raw records and waits for one answer; it commits the
batch's offsets only after the answer says the batch is stored. The writer retries a failing
store until it succeeds or is told to stop, reporting each failure so it is logged where the
operator looks. If the consumer process dies, the pipe closes and the writer exits.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from sidecar.errors import BrokerError, SidecarError, StoreError
from sidecar.ingest.batch import BatchPlan, plan_batch
from sidecar.ingest.sampling import SamplingRules
from sidecar.logs import current_log_setup, log_to_stderr
from sidecar.settings import Settings, load_prompts_config
from sidecar.store.repository import OutcomeCounts

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 30.0
STOP_GRACE_S = 30.0

RawRecord = tuple[str, int, int, bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]
"""(topic, partition, offset, key, value, headers): cheap to pickle across the pipe."""


@dataclass(frozen=True, slots=True)
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | None


class WriterError(SidecarError):
    """The writer process died; the consumer stops so that nothing is committed past it."""


class IngestWriter:
    """The consumer's handle on the writer process. The sampling rules are built here, once,
    from SAMPLE_RATE and CONFIG_FILE, and handed to the writer: a bad file stops the consumer
    before anything is read, and the writer samples by exactly the rules the consumer saw."""

    def __init__(self, settings: Settings, bootstrap_servers: str) -> None:
        sampling = SamplingRules.of(
            settings.sample_rate, load_prompts_config(settings.config_file).prompts
        )
        context = multiprocessing.get_context("spawn")
        self._stopping = context.Event()
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=serve,
            args=(
                child,
                settings,
                sampling,
                bootstrap_servers,
                self._stopping,
                current_log_setup(),
            ),
            name="gepa-sidecar-ingest-writer",
            daemon=True,
        )
        self._process.start()
        child.close()

    def write(self, records: list[RawRecord]) -> OutcomeCounts | None:
        """Store one batch; None when the writer abandoned it because it was told to stop."""
        try:
            self._connection.send(records)
            while True:
                kind, payload = self._connection.recv()
                if kind == "retry":
                    log.warning("ingest batch not stored, retrying: %s", payload)
                    continue
                return payload if kind == "stored" else None
        except (EOFError, OSError) as exc:
            raise WriterError(f"the ingest writer process exited ({exc or 'pipe closed'})") from exc

    def stop(self) -> None:
        """Abandon a batch that is being retried; the writer answers it with `abandoned`."""
        self._stopping.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._connection.send(None)
        self._process.join(STOP_GRACE_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()


def serve(
    connection: Connection,
    settings: Settings,
    sampling: SamplingRules,
    bootstrap_servers: str,
    stopping: Event,
    log_setup: tuple[str, str],
) -> None:
    """The writer process's main loop (module-level so that `spawn` can import it); it logs
    at the consumer process's level and in its format."""
    from sidecar.client.security import kafka_security_options
    from sidecar.ingest.dead_letter import DeadLetterQueue
    from sidecar.store.database import create_database_engine

    log_to_stderr(*log_setup)
    engine = create_database_engine(settings.database_url)
    dead_letters = DeadLetterQueue(
        bootstrap_servers, settings.dlq_topic, kafka_security_options(settings)
    )
    try:
        while True:
            try:
                records = connection.recv()
            except EOFError:
                return
            if records is None:
                return
            plan = plan_batch([_Record(*record) for record in records], sampling)
            counts = _carry_out(plan, engine, dead_letters, connection, stopping)
            connection.send(("stored", counts) if counts is not None else ("abandoned", None))
    except (BrokenPipeError, KeyboardInterrupt):
        return
    finally:
        dead_letters.close()
        engine.dispose()


def _carry_out(
    plan: BatchPlan, engine: Any, dead_letters: Any, connection: Connection, stopping: Event
) -> OutcomeCounts | None:
    from sidecar.store.repository import store_events

    delay = RETRY_FIRST_S
    while True:
        try:
            if plan.dead_letters:
                dead_letters.send(plan.dead_letters)
                plan.dead_letters = []
            return store_events(engine, plan.consumed, plan.outcomes, datetime.now(UTC))
        except (StoreError, BrokerError) as exc:
            connection.send(("retry", f"{exc} (next try in {delay:.1f}s)"))
            if stopping.wait(delay):
                return None
            delay = min(RETRY_MAX_S, delay * 2) * random.uniform(0.8, 1.2)
