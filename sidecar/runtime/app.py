"""The App: built from the frozen settings, it creates and owns the database engine, metrics,
HTTP server, consumer, judge worker, outbox relay and job scheduler; on the way out it stops them
all against one deadline (see shutdown.py), the HTTP server and the engine last."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sidecar.api.app import create_api
from sidecar.api.models import Liveness
from sidecar.client.security import kafka_security_options
from sidecar.errors import ConfigError
from sidecar.ingest.consumer import TrafficConsumer
from sidecar.judge.judge import judge_for
from sidecar.judge.worker import JudgeWorker, every_partition, whole_budget
from sidecar.llm.gateway import Gateway
from sidecar.metrics import Metrics
from sidecar.optimize.evaluation import evaluation_key
from sidecar.promote.publishers import FilePublisher, KafkaPublisher, Publisher
from sidecar.promote.relay import OutboxRelay
from sidecar.promote.served import ServedDocuments
from sidecar.runtime.heap import freeze_after_imports
from sidecar.runtime.http import HttpServer
from sidecar.runtime.kafka import ensure_topics
from sidecar.runtime.probes import DatabaseWatch
from sidecar.runtime.scheduler import JobScheduler
from sidecar.runtime.shutdown import Deadline, Stop, stop_together
from sidecar.runtime.startup import StartupWait
from sidecar.settings import PromptsConfig, Settings, load_prompts_config
from sidecar.store.candidates import candidate_means
from sidecar.store.database import create_database_engine, migrate
from sidecar.store.model_errors import StoredFailures
from sidecar.store.repository import seed_prompt

log = logging.getLogger(__name__)

HTTP_STOP_RESERVE_S = 1.0
"""Kept back from the workers' share of the grace: the HTTP server stops after them."""


class App:
    """One running sidecar. `run()` blocks until `stop()`; `stop()` is safe from a signal, and
    `run()` then returns within SHUTDOWN_GRACE_S, naming in `abandoned` what it left running."""

    def __init__(
        self, settings: Settings, prompts: PromptsConfig | None = None, freeze_heap: bool = False
    ) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ConfigError(
                "SIDECAR_KAFKA_BOOTSTRAP_SERVERS: not set (or run `gepa-sidecar demo`, "
                "which starts an embedded broker)"
            )
        self.settings = settings
        self.bootstrap_servers = settings.kafka_bootstrap_servers
        notice = settings.role_fallback_notice()
        if notice:
            log.info("%s", notice)
        self.prompts = prompts or load_prompts_config(settings.config_file)
        self.metrics = Metrics([p.name for p in self.prompts.prompts], settings.publish_targets)
        self.engine = create_database_engine(settings.database_url)
        self.database = DatabaseWatch(self.engine)
        self.http: HttpServer | None = None
        self.consumer: TrafficConsumer | None = None
        self.gateway = Gateway(settings, self.metrics, sink=StoredFailures(self.engine))
        self.judge: JudgeWorker | None = None
        self.scheduler: JobScheduler | None = None
        self.served = ServedDocuments()
        self.relay: OutboxRelay | None = None
        self.abandoned: list[str] = []
        self.freeze_heap = freeze_heap  # the process is this App's alone (see runtime/heap.py)
        self._consuming: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._parts = threading.Lock()  # a part is made, or the stop gathers them: not both
        self._deadline: Deadline | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # a stop was asked for, or the consumer ended
        self.startup = StartupWait(self._stopping)

    def readiness(self) -> dict[str, bool]:
        """The HTTP server answers, and the start-up republish has put every active prompt in
        this replica's file and served document, or the database is not there to say what is
        active (the chatbot then starts on its own prompt, and hot-reloads ours once it is
        published). Nothing else: readiness gates the chatbot's pod, and an outage of the
        database, the broker or the models is no reason to hold the chatbot back or take it out
        of its Service (those show on /healthz's detail)."""
        in_place = self.relay is not None and self.relay.prompts_in_place
        return {"prompts_published": in_place or self.startup.waiting_for == "database"}

    def liveness(self) -> Liveness:
        """A worker thread that ended while the sidecar is not stopping fails its check."""
        stopping, judge = self._stopping.is_set(), self.judge
        checks = {
            "consumer": stopping or self._consuming is None or self._consuming.is_alive(),
            "judge": judge is None
            or (judge.failed is None and (stopping or not judge.lanes or judge.alive)),
            "relay": stopping or self.relay is None or self.relay.alive,
            "scheduler": stopping or self.scheduler is None or self.scheduler.alive,
        }
        consumer = self.consumer
        detail = {
            "database": self.database.state(),
            "consumer": {
                "running": consumer is not None and consumer.running,
                "partitions_assigned": consumer is not None and consumer.assigned,
                "unassigned_s": round(consumer.unassigned_s, 1) if consumer is not None else 0.0,
            },
            "judge": {
                "running": judge is not None and judge.alive,
                "error": None if judge is None or judge.failed is None else repr(judge.failed),
            },
            "prompts_published": self.relay is not None and self.relay.prompts_in_place,
            "starting": {"waiting_for": self.startup.waiting_for, "problem": self.startup.problem},
            "stopping": stopping,
        }
        return Liveness(checks=checks, detail=detail)

    def stop(self) -> None:
        """Ask for a stop; SHUTDOWN_GRACE_S counts from the first ask. Safe from a signal."""
        if self._deadline is None:
            self._deadline = Deadline.after(self.settings.shutdown_grace_s)
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        """Serve HTTP, start the rest on a thread of its own (it may wait out an outage), and
        serve until `stop()`; then stop everything within the grace. Raises what ended the
        start-up or the consumer (its writer process died) once the rest has stopped."""
        try:
            self._serve_http()
            threading.Thread(target=self._start, name="startup", daemon=True).start()
            while not self._wake.wait(1.0):
                pass
        finally:
            self._shutdown()
        if self._failure is not None:
            raise self._failure

    def _serve_http(self) -> None:
        """First, so the probes answer while the rest starts."""
        api = create_api(
            self,
            self.metrics.registry,
            self.engine,
            served=self.served,
            admin_token=self.settings.admin_token,
            publish_targets=self.settings.publish_targets,
            scores=self._scores,
            on_decision=self._decided,
        )
        self.http = HttpServer(api, self.settings.http_host, self.settings.http_port).start()
        log.info("sidecar serving on port %d", self.http.port)
        self.database.start()

    def _start(self) -> None:
        """The store and the publishing that readiness waits for, then Kafka and the workers.
        A dependency that is not there is waited for, not a reason to exit; a stop asked for
        meanwhile ends the start-up, and finds every part made so far."""
        try:
            if not self.startup.until_done("database", self._prepare_store):
                return
            with self._parts:
                if self._stopping.is_set():
                    return
                self.relay = OutboxRelay(
                    self.engine,
                    self._publishers(),
                    self.metrics,
                    self.settings.publish_poll_interval_s,
                )
            self.relay.start()
            consumer = self.startup.until_done("Kafka", self._connect_kafka)
            if consumer is None:
                return
            with self._parts:
                if self._stopping.is_set():
                    consumer.close()
                    return
                self._start_workers(consumer)
        except BaseException as exc:
            self._failure = exc
            self._wake.set()

    def _start_workers(self, consumer: TrafficConsumer) -> None:
        self.consumer = consumer
        self._consuming = threading.Thread(
            target=self._consume, args=(self.consumer,), name="consumer", daemon=True
        )
        self._consuming.start()
        log.info("consuming %s", self.settings.traffic_topic)
        # Started last: its thread imports litellm (seconds of CPU under the GIL), which must
        # not delay consuming.
        # Replicas share one PostgreSQL: each judges what it consumes. SQLite has one replica.
        replicas = self.engine.dialect.name == "postgresql"
        owned = consumer.owned_partitions if replicas else every_partition
        self.judge = JudgeWorker(
            self.engine,
            self.gateway,
            self.prompts,
            self.metrics,
            owned,
            budget_share=consumer.owned_share if replicas else whole_budget,
        ).start()
        self.scheduler = JobScheduler(self.engine, self.settings, self.prompts, self.metrics)
        self.scheduler.start()
        if self.freeze_heap:
            freeze_after_imports()

    def _prepare_store(self) -> bool:
        migrate(self.engine)
        self._seed_prompts()
        return True

    def _connect_kafka(self) -> TrafficConsumer:
        """The topics made sure of, and the traffic consumer connected."""
        settings = self.settings
        security = kafka_security_options(settings)
        topics = [settings.traffic_topic, settings.dlq_topic]
        ensure_topics(self.bootstrap_servers, topics, security=security)
        if "kafka" in settings.publish_targets:
            topic = settings.prompts_topic
            ensure_topics(self.bootstrap_servers, [topic], compacted=[topic], security=security)
        return TrafficConsumer(settings, self.bootstrap_servers, self.metrics)

    def _consume(self, consumer: TrafficConsumer) -> None:
        try:
            consumer.run()
        except BaseException as exc:
            self._failure = exc
        finally:
            self._wake.set()

    def _stop_consumer(self, timeout: float) -> bool:
        """The consumer finishes its batch, commits what is stored and closes."""
        if self.consumer is not None:
            self.consumer.stop()
        if self._consuming is not None:
            self._consuming.join(timeout)
            return not self._consuming.is_alive()
        return True

    def _shutdown(self) -> None:
        """Every worker at once against the one deadline, then the HTTP server (it serves the
        prompt until the end), then the database engine."""
        deadline = self._deadline or Deadline.after(self.settings.shutdown_grace_s)
        gathering = self._parts.acquire(timeout=deadline.remaining())
        self._stopping.set()
        if gathering:
            self._parts.release()
        workers: dict[str, Stop] = {
            "consumer": self._stop_consumer,
            "database watch": self.database.stop,
        }
        for name, part in (
            ("scheduler", self.scheduler),
            ("judge worker", self.judge),
            ("outbox relay", self.relay),
        ):
            if part is not None:
                workers[name] = part.stop
        reserve = min(HTTP_STOP_RESERVE_S, self.settings.shutdown_grace_s / 4)
        abandoned = stop_together(workers, deadline.earlier(reserve))
        if self.http is not None and not self.http.stop(deadline.remaining()):
            abandoned.append("http server")
        self.engine.dispose()
        self.abandoned = abandoned
        if abandoned:
            log.warning(
                "stopped within SHUTDOWN_GRACE_S=%gs by abandoning what was still running: %s",
                self.settings.shutdown_grace_s,
                ", ".join(abandoned),
            )
        log.info("sidecar stopped")

    def _scores(self, name: str) -> dict[int, tuple[float, int]]:
        """Mean replayed scores per version, under the key `show --json` reads them with."""
        spec = next((spec for spec in self.prompts.prompts if spec.name == name), None)
        if spec is None:
            return {}
        key = evaluation_key(self.gateway, judge_for(self.gateway, spec), spec)
        return candidate_means(self.engine, name, key)

    def _decided(self) -> None:
        """A decision was committed through the API: deliver it now, not at the next poll."""
        if self.relay is not None:
            self.relay.wake()

    def _publishers(self) -> dict[str, Publisher]:
        """The configured targets; the relay's start-up tick republishes the active versions."""
        made: dict[str, Publisher] = {}
        for target in self.settings.publish_targets:
            if target == "file":
                made[target] = FilePublisher(self.settings.publish_dir)
            elif target == "kafka":
                made[target] = KafkaPublisher(self.settings)
            else:
                made[target] = self.served
        return made

    def _seed_prompts(self) -> None:
        now = datetime.now(UTC)
        for prompt in self.prompts.prompts:
            if seed_prompt(self.engine, prompt.name, dict(prompt.seed), now):
                log.info("seeded %s version 1 from the config file", prompt.name)
