"""The example chatbot as its team would run it: a real HTTP server answering through litellm
(on the simulated models), following the published file, and emitting each reply to the
traffic topic; a failing model is the caller's 502, never a crash, and emits nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from examples.customer_care import chatbot
from examples.customer_care.world import CustomerCareWorld
from sidecar.client import TrafficEmitter
from sidecar.events import PromptDocument, TrafficEvent
from sidecar.promote.publishers import FilePublisher
from sidecar.runtime.http import HttpServer
from sidecar.runtime.kafka import ensure_topics
from sidecar.simulated import LlmServer
from tests.helpers import read_all, scaled, wait_until

REFUND = "Refunds go back to the original payment method within 5 business days."


def serve(stack: ExitStack, app: object) -> str:
    server = HttpServer(app, "127.0.0.1", 0).start()  # type: ignore[arg-type]
    stack.callback(server.stop)
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def published(tmp_path: Path) -> Path:
    return tmp_path / "prompts"


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as opened:
        yield opened


def test_it_answers_with_the_published_prompt_and_emits_each_reply(
    kafka_bootstrap: str, published: Path, stack: ExitStack
) -> None:
    topic = f"traffic-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_bootstrap, [topic])
    models = stack.enter_context(LlmServer(CustomerCareWorld()))
    prompt = stack.enter_context(chatbot.hot_prompt(f"file://{published}/customer-care.json"))
    emitter = TrafficEmitter(kafka_bootstrap, topic, prompt_name=chatbot.NAME)
    stack.callback(emitter.close, scaled(10))
    app = chatbot.create_chatbot(prompt, emitter, "openai/simulated", models.api_base)
    url = serve(stack, app)
    question = {"message": "Where is my refund?", "segment": "billing"}

    first = httpx.post(f"{url}/chat", json=question, timeout=scaled(10)).json()
    assert first["prompt_version"] == 1  # nothing published yet: the bundled seed
    assert "5 business days" not in first["reply"]
    seed = chatbot.prompt_spec()["seed"]["system_prompt"]
    FilePublisher(published).publish(
        PromptDocument.build(
            name=chatbot.NAME,
            version=2,
            components={"system_prompt": f"{seed} {REFUND}"},
            created_at=datetime.now(UTC),
        ),
        1,
    )
    wait_until(lambda: prompt.version == 2, 30, "the chatbot to load v2")
    second = httpx.post(f"{url}/chat", json=question, timeout=scaled(10)).json()
    assert second["prompt_version"] == 2
    assert "5 business days" in second["reply"]

    records = read_all(kafka_bootstrap, topic, 2)
    emitted = [TrafficEvent.model_validate_json(record.value) for record in records]
    assert [(e.prompt_version, e.output, e.segment) for e in emitted] == [
        (1, first["reply"], "billing"),
        (2, second["reply"], "billing"),
    ]
    assert emitted[0].inputs == {"user_message": "Where is my refund?"}


def test_a_failing_model_is_a_502_with_its_reason_and_nothing_is_emitted(
    published: Path, stack: ExitStack
) -> None:
    prompt = stack.enter_context(chatbot.hot_prompt(f"file://{published}/customer-care.json"))
    emitter = TrafficEmitter("127.0.0.1:1", prompt_name=chatbot.NAME)
    stack.callback(emitter.close, 0.0)
    app = chatbot.create_chatbot(prompt, emitter, "openai/simulated", "http://127.0.0.1:1/v1")
    url = serve(stack, app)
    answer = httpx.post(f"{url}/chat", json={"message": "Hello?"}, timeout=scaled(90))
    assert answer.status_code == 502
    assert answer.json()["detail"].startswith("the model failed: ")
    assert emitter.sent == 0 and emitter.pending == 0 and emitter.dropped == 0
    assert httpx.get(f"{url}/healthz", timeout=scaled(10)).json() == {
        "status": "ok",
        "prompt_version": None,
    }
