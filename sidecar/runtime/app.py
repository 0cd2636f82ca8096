"""The App: built from the frozen settings, it creates and owns the database engine, metrics,
HTTP server and consumer, and closes them in reverse order on the way out."""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from datetime import UTC, datetime

from sidecar.api.app import create_api
from sidecar.errors import ConfigError
from sidecar.ingest.consumer import TrafficConsumer
from sidecar.judge.judge import judge_for
from sidecar.judge.worker import JudgeWorker
from sidecar.llm.gateway import Gateway
from sidecar.metrics import Metrics
from sidecar.optimize.evaluation import evaluation_key
from sidecar.promote.publishers import FilePublisher, KafkaPublisher, Publisher
from sidecar.promote.relay import OutboxRelay
from sidecar.promote.served import ServedDocuments
from sidecar.runtime.http import HttpServer
from sidecar.runtime.kafka import ensure_topics
from sidecar.runtime.scheduler import JobScheduler
from sidecar.settings import PromptsConfig, Settings, load_prompts_config
from sidecar.store.candidates import candidate_means
from sidecar.store.database import create_database_engine, migrate, ping
from sidecar.store.repository import seed_prompt

log = logging.getLogger(__name__)


class App:
    """One running sidecar. `run()` blocks until `stop()`; `stop()` is safe from a signal."""

    def __init__(self, settings: Settings, prompts: PromptsConfig | None = None) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ConfigError(
                "SIDECAR_KAFKA_BOOTSTRAP_SERVERS: not set (or run `gepa-sidecar demo`, "
                "which starts an embedded broker)"
            )
        self.settings = settings
        self.bootstrap_servers = settings.kafka_bootstrap_servers
        self.prompts = prompts or load_prompts_config(settings.config_file)
        self.metrics = Metrics([p.name for p in self.prompts.prompts], settings.publish_targets)
        self.engine = create_database_engine(settings.database_url)
        self.http: HttpServer | None = None
        self.consumer: TrafficConsumer | None = None
        self.gateway = Gateway(settings, self.metrics)
        self.judge: JudgeWorker | None = None
        self.scheduler: JobScheduler | None = None
        self.served = ServedDocuments()
        self.relay: OutboxRelay | None = None
        self._stopping = threading.Event()

    def readiness(self) -> dict[str, bool]:
        """Partitions are not required: a replica left without any (more replicas than
        partitions, or mid-rebalance) still serves prompts, and readiness gates the whole pod."""
        return {
            "database": ping(self.engine),
            "consumer": self.consumer is not None and self.consumer.running,
            "judge": self.judge is not None and self.judge.failed is None,
        }

    def stop(self) -> None:
        self._stopping.set()
        if self.consumer is not None:
            self.consumer.stop()

    def run(self) -> None:
        with ExitStack() as stack:
            stack.callback(self.engine.dispose)
            migrate(self.engine)
            self._seed_prompts()
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
            stack.callback(self.http.stop)
            ensure_topics(
                self.bootstrap_servers, [self.settings.traffic_topic, self.settings.dlq_topic]
            )
            if "kafka" in self.settings.publish_targets:
                topic = self.settings.prompts_topic
                ensure_topics(self.bootstrap_servers, [topic], compacted=[topic])
            self.relay = OutboxRelay(
                self.engine, self._publishers(), self.metrics, self.settings.publish_poll_interval_s
            ).start()
            stack.callback(self.relay.stop)
            self.consumer = TrafficConsumer(self.settings, self.bootstrap_servers, self.metrics)
            log.info(
                "sidecar serving on port %d, consuming %s",
                self.http.port,
                self.settings.traffic_topic,
            )
            # Started last: its thread imports litellm (seconds of CPU under the GIL), which
            # must not delay serving HTTP and consuming.
            self.judge = JudgeWorker(self.engine, self.gateway, self.prompts, self.metrics).start()
            stack.callback(self.judge.stop)
            self.scheduler = JobScheduler(
                self.engine, self.settings, self.prompts, self.metrics
            ).start()
            stack.callback(self.scheduler.stop)
            if self._stopping.is_set():
                self.consumer.stop()
            self.consumer.run()
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
