"""The gateway through real litellm to a real HTTP server: retries, timeouts, limits, ledger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sidecar.errors import LlmError
from sidecar.llm.gateway import Gateway
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.optimize.reflection import Proposer, ReflectionExample
from sidecar.runtime.broker import free_port
from sidecar.settings import load_settings
from tests.helpers import metric_value, scaled, wait_until
from tests.llm_server import LlmServer
from tests.world import world_settings

HELLO = [{"role": "user", "content": "hello"}]
REPLY = "We have received your message."  # the test server's task rule, with no instructions


def gateway(server: LlmServer, metrics: Metrics | None = None, **overrides: Any) -> Gateway:
    settings = load_settings(
        **{
            "judge_model": "openai/gpt-4o-mini",
            "judge_api_base": server.api_base,
            "task_model": "openai/local",
            "task_api_base": server.api_base,
            "llm_backoff_base_s": 0.01,
            "llm_backoff_cap_s": 0.05,
            "llm_timeout_s": 0.5,
            **overrides,
        }
    )
    return Gateway(settings, metrics)


def connections_to(port: int) -> int:
    """This process's open TCP sockets connected to `port`: the client ends, not the server's."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            inodes.add(os.readlink(f"/proc/self/fd/{fd}").removeprefix("socket:[").rstrip("]"))
    found = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            found += fields[3] == "01" and remote_port == port and fields[9] in inodes
    return found


def test_a_loop_closes_the_clients_litellm_made_for_it(llm_server: LlmServer) -> None:
    """litellm keeps a kept-alive client per event loop; each loop's is closed as it ends."""
    client = gateway(llm_server)
    port = urlsplit(llm_server.api_base).port
    assert port is not None

    async def ask() -> int:
        assert (await client.complete("task", HELLO)).text == REPLY
        return connections_to(port)

    for _ in range(3):
        assert run_with_models(ask()) == 1  # open while its loop runs
        assert connections_to(port) == 0


def test_a_loop_leaves_no_call_logging_behind(
    llm_server: LlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    """litellm queues a logging task per call; those a loop leaves are carried to the next."""
    proposer = Proposer(Gateway(world_settings(llm_server.api_base)))
    example = ReflectionExample({"user_message": "Where is my order?"}, REPLY, 0.25, "Curt.")
    with caplog.at_level(logging.WARNING, logger="LiteLLM"):
        for _ in range(3):
            run_with_models(proposer.propose("system_prompt", "Be kind.", [example]))
    assert [r.getMessage() for r in caplog.records if "carried" in r.getMessage()] == []


def test_transient_faults_are_retried_until_an_answer(llm_server: LlmServer) -> None:
    llm_server.script = ["429", "500", "hang"]
    completion = run_with_models(gateway(llm_server).complete("task", HELLO))
    assert completion.attempts == 4
    assert completion.text == REPLY
    assert llm_server.requests == {"429": 1, "500": 1, "hang": 1, "ok": 1}


def test_retries_are_bounded_and_the_last_error_is_raised(llm_server: LlmServer) -> None:
    llm_server.script = ["500"] * 10
    with pytest.raises(LlmError, match="InternalServerError") as raised:
        run_with_models(gateway(llm_server, llm_max_retries=2).complete("task", HELLO))
    assert raised.value.retryable
    assert raised.value.status == 500
    assert llm_server.requests["500"] == 3


def test_a_hanging_provider_times_out_on_every_attempt(llm_server: LlmServer) -> None:
    llm_server.script = ["hang"] * 10
    with pytest.raises(LlmError, match=r"timed out|Timeout") as raised:
        run_with_models(gateway(llm_server, llm_max_retries=1).complete("task", HELLO))
    assert raised.value.retryable
    assert llm_server.requests["hang"] == 2


def test_a_refused_request_is_not_retried(llm_server: LlmServer) -> None:
    broken = gateway(llm_server, task_api_base=llm_server.api_base.replace("/v1", "/nowhere"))
    with pytest.raises(LlmError) as raised:
        run_with_models(broken.complete("task", HELLO))
    assert not raised.value.retryable
    assert raised.value.status == 404
    assert "\n" not in str(raised.value)


def test_a_provider_that_refuses_response_format_is_asked_without_it(
    llm_server: LlmServer,
) -> None:
    llm_server.refuse_response_format = True
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    client = gateway(llm_server)
    assert client.accepts_schema("task")
    completion = run_with_models(client.complete("task", HELLO, response_format=schema))
    assert completion.text == REPLY
    assert "response_format" not in llm_server.bodies[-1]
    assert not client.accepts_schema("task")


def test_concurrency_is_limited_per_role(llm_server: LlmServer) -> None:
    llm_server.latency_s = 0.05
    client = gateway(llm_server, task_concurrency=3)

    async def many() -> None:
        await asyncio.gather(*(client.complete("task", HELLO) for _ in range(15)))

    run_with_models(many())
    assert llm_server.max_inflight == 3


def test_ledger_and_metrics_count_tokens_and_priced_cost(llm_server: LlmServer) -> None:
    metrics = Metrics(managed=())
    client = gateway(llm_server, metrics)

    async def calls() -> None:
        await client.complete("judge", HELLO)
        await client.complete("task", HELLO)

    run_with_models(calls())
    spend = client.ledger.snapshot()
    assert spend["judge"].prompt_tokens == 1
    assert spend["judge"].cost_usd > 0  # gpt-4o-mini has a price in litellm's bundled map
    assert spend["task"].unpriced_requests == 1  # "local" has none; its tokens still count
    assert spend["task"].completion_tokens == 5
    assert metric_value(metrics, "llm_tokens_total", role="task", type="completion") == 5
    assert metric_value(metrics, "llm_cost_usd_total", role="judge") == pytest.approx(
        spend["judge"].cost_usd
    )
    assert metric_value(metrics, "llm_request_duration_seconds_count", role="task") == 1


def test_the_api_key_is_sent_to_the_provider(llm_server: LlmServer) -> None:
    client = gateway(llm_server, task_api_key="sk-test-123")
    run_with_models(client.complete("task", HELLO))
    run_with_models(client.complete("judge", HELLO))
    assert llm_server.bodies[0]["model"] == "local"
    assert llm_server.authorizations == ["Bearer sk-test-123", "Bearer unused"]


def test_sampling_settings_reach_the_provider(llm_server: LlmServer) -> None:
    client = gateway(llm_server)
    run_with_models(client.complete("task", HELLO, temperature=0.7, max_tokens=50))
    assert (llm_server.bodies[-1]["temperature"], llm_server.bodies[-1]["max_tokens"]) == (0.7, 50)


def test_a_retry_after_is_waited_for_up_to_the_backoff_cap(llm_server: LlmServer) -> None:
    llm_server.retry_after = "0.3"
    llm_server.script = ["429ra"]
    client = gateway(llm_server, llm_backoff_base_s=0.001, llm_backoff_cap_s=2.0)
    assert run_with_models(client.complete("task", HELLO)).attempts == 2
    assert llm_server.arrivals[1] - llm_server.arrivals[0] >= 0.3  # not the ~1 ms backoff
    llm_server.retry_after = "600"  # a provider asking for more than the cap gets the cap
    llm_server.script = ["429ra"]
    assert run_with_models(client.complete("task", HELLO)).text == REPLY
    assert llm_server.arrivals[3] - llm_server.arrivals[2] < 600
    assert llm_server.requests == {"429ra": 2, "ok": 2}


def calls(metrics: Metrics, role: str = "task") -> float:
    return metric_value(metrics, "llm_request_duration_seconds_count", role=role)


def test_a_refused_connection_is_retried_and_then_raised(llm_server: LlmServer) -> None:
    metrics = Metrics(managed=())
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    client = gateway(llm_server, metrics, task_api_base=nowhere, llm_max_retries=2)
    with pytest.raises(LlmError, match="Connection error") as raised:
        run_with_models(client.complete("task", HELLO))
    assert raised.value.retryable
    assert calls(metrics) == 3
    assert sum(llm_server.requests.values()) == 0


def test_a_provider_that_comes_up_during_the_retries_answers(llm_server: LlmServer) -> None:
    metrics = Metrics(managed=())
    port = free_port()
    late = LlmServer(port=port)
    late_base = f"http://127.0.0.1:{port}/v1"
    client = gateway(
        llm_server, metrics, task_api_base=late_base, llm_max_retries=10, llm_backoff_base_s=0.1
    )
    answers: list[str] = []
    caller = threading.Thread(
        target=lambda: answers.append(run_with_models(client.complete("task", HELLO)).text)
    )
    caller.start()
    try:
        wait_until(lambda: calls(metrics) >= 1, 30, "a refused attempt")
        late.start()
        caller.join(scaled(30))
    finally:
        late.stop()
    assert answers == [REPLY]
    assert calls(metrics) >= 2
    assert late.requests == {"ok": 1}
