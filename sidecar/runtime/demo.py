"""`gepa-sidecar demo`: the whole loop on embedded defaults, beside the example chatbot.

The script: customers talk to the chatbot; its traffic reaches the sidecar through the embedded
broker and is judged; a GEPA run proposes a better prompt; a shadow pass compares it with the
champion on fresh traffic; a person approves it (over the sidecar's HTTP API, with its token);
the chatbot picks the new version up without a restart and answers with it. Then everything
keeps serving until Ctrl-C, so the person can roll back over HTTP or the CLI.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sidecar.errors import SidecarError
from sidecar.llm.loop_clients import run_with_models
from sidecar.optimize.engine import OptimizationRun, RunReport
from sidecar.optimize.lineage import component_diff
from sidecar.runtime.app import App
from sidecar.runtime.demo_parts import (
    Models,
    demo_settings,
    example_module,
    fresh_data_dir,
    start_chatbot,
    start_models,
)
from sidecar.runtime.kafka import kafka_cluster
from sidecar.runtime.progress import run_with_progress_bar
from sidecar.settings import Settings, load_settings
from sidecar.shadow.runner import ShadowPass
from sidecar.store.candidates import candidates_of
from sidecar.store.judgments import judgment_feed
from sidecar.store.repository import count_stored_events

WAIT_S = 600.0
SHOWN = 5  # judgments printed per batch of traffic


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path
    models: str  # "simulated" or "local"
    assume_yes: bool
    serve: bool
    traffic: int
    sidecar_port: int = 8791
    chatbot_port: int = 8000


@dataclass
class Demo:
    """The running parts the script talks to."""

    settings: Settings
    models: Models
    app: App
    prompt: Any
    chatbot_url: str
    sidecar_url: str
    echo: Callable[[str], None]

    @property
    def spec(self) -> Any:
        return self.app.prompts.prompts[0]


def run_demo(
    options: DemoOptions,
    echo: Callable[[str], None],
    ask: Callable[[str], bool],
) -> None:
    fresh_data_dir(options.data_dir)
    base = load_settings()
    with ExitStack() as stack:
        servers = stack.enter_context(kafka_cluster(base.kafka_bootstrap_servers))
        models = start_models(base, options.models, stack)
        settings = demo_settings(servers, options.data_dir, models, options.sidecar_port)
        echo(f"broker      {servers} (embedded)")
        echo(f"models      {models.label}")
        demo = _start(settings, models, options.chatbot_port, stack, echo)
        before = _converse(demo, options.traffic, "before")
        if not models.can_improve:
            echo(
                "optimize    skipped: a 135M model cannot reflect (asked to rewrite an instruction "
                "from feedback it carries none of the facts over); point the three role settings "
                "at a real provider, or run `make demo` for the simulated models"
            )
        else:
            version = _improve(demo, options.traffic)
            if version is not None and _approve(demo, version, options.assume_yes, ask):
                after = _converse(demo, options.traffic, f"after approving v{version}")
                echo(
                    f"result      mean judge score {_mean(before):.2f} with v1 -> "
                    f"{_mean(after):.2f} with v{version} on the same {options.traffic} customer "
                    f"messages ({models.label})"
                )
        if options.serve:
            _serve(demo)


def _start(
    settings: Settings,
    models: Models,
    chatbot_port: int,
    stack: ExitStack,
    echo: Callable[[str], None],
) -> Demo:
    app = App(settings)
    runner = threading.Thread(target=app.run, name="sidecar", daemon=True)
    runner.start()
    stack.callback(runner.join, 30)
    stack.callback(app.stop)
    _wait(lambda: app.consumer is not None and app.consumer.assigned, "the sidecar's consumer")
    assert app.http is not None
    sidecar_url = f"http://127.0.0.1:{app.http.port}"
    prompt, chatbot = start_chatbot(settings, models, chatbot_port, stack)
    chatbot_url = f"http://127.0.0.1:{chatbot.port}"
    _wait(lambda: prompt.version == 1, "the chatbot to load the published v1")
    echo(
        f"sidecar     {sidecar_url}  (admin page /, /metrics, /docs; "
        f"database {settings.database_url})"
    )
    echo(f"published   customer-care v1 to {settings.publish_dir / 'customer-care.json'}")
    echo(f"chatbot     {chatbot_url}/chat  (examples/customer_care/chatbot.py, serving v1)")
    return Demo(settings, models, app, prompt, chatbot_url, sidecar_url, echo)


def _converse(demo: Demo, count: int, when: str) -> list[float]:
    """Customers talk to the chatbot; the sidecar judges what it answered."""
    traffic = example_module("traffic")
    stored = count_stored_events(demo.app.engine)
    replies = traffic.drive(demo.chatbot_url, count)  # the same customers every round
    demo.echo(
        f"traffic     {len(replies)} customer messages through the chatbot ({when}); "
        f"judged by {demo.models.label.split(' (')[0]}:"
    )
    for message, reply in replies[:3]:
        demo.echo(f"  customer  {_clip(message, 60)}")
        demo.echo(f"  v{reply['prompt_version']} bot    {_clip(reply['reply'], 100)}")
    _wait(lambda: count_stored_events(demo.app.engine) >= stored + len(replies), "the traffic")
    return _show_judgments(demo, stored, len(replies))


def _show_judgments(demo: Demo, skip: int, count: int) -> list[float]:
    """The first judgments as the judge workers write them, then this traffic's mean."""
    label = demo.models.label.split(" (")[0]
    printed = 0
    deadline = time.monotonic() + WAIT_S
    while True:
        done = [(r, out) for r, out in judgment_feed(demo.app.engine)[skip:] if r.status == "ok"]
        for row, output in done[printed:SHOWN]:
            demo.echo(
                f"  score {row.score:.2f}  {_clip(output, 44):<46} {_clip(row.feedback or '', 80)}"
            )
        printed = max(printed, min(len(done), SHOWN))
        if len(done) >= count:
            scores = [row.score for row, _ in done if row.score is not None]
            demo.echo(
                f"judged      {len(scores)} replies: mean {sum(scores) / len(scores):.2f} "
                f"({label}; judge_score in /metrics)"
            )
            return scores
        if time.monotonic() > deadline:
            raise SidecarError("demo: timed out waiting for the judge")
        time.sleep(0.2)


def _improve(demo: Demo, traffic: int) -> int | None:
    """A GEPA run, then a shadow pass on fresh traffic; the version awaiting approval."""
    demo.echo(
        "optimize    a GEPA run over the judged traffic (reflection: " + demo.models.label + ")"
    )
    run = OptimizationRun(demo.app.engine, demo.settings, demo.spec, seed=0)
    if sys.stdout.isatty():
        report = run_with_progress_bar(run, demo.settings.run_max_metric_calls, stderr=False)
    else:  # a log or a pipe: one line per iteration
        run.progress = _progress(demo)
        report = run_with_models(run.execute())
    demo.echo(
        f"            {report.iterations} iterations, {report.metric_calls} metric calls; champion "
        f"v{report.champion_version} {report.champion_score:.2f}, best v{report.best_version} "
        f"{report.best_score:.2f}; proposed {', '.join(f'v{v}' for v in report.proposed) or 'none'}"
    )
    demo.echo(_priced(run.gateway.ledger.snapshot(), demo.models.label))
    if not report.proposed:
        demo.echo("            nothing beat the champion clearly enough to propose")
        return None
    versions = candidates_of(demo.app.engine, demo.spec.name)
    best = max(report.proposed, key=lambda v: (versions[v].evidence or {}).get("pareto_mean", 0))
    demo.echo(f"diff        v{report.champion_version} -> v{best}")
    for line in component_diff(versions[report.champion_version], versions[best]).splitlines():
        demo.echo(f"  {line}")
    _converse(demo, traffic, "fresh traffic for the shadow pass")
    shadow = run_with_models(
        ShadowPass(demo.app.engine, demo.settings, demo.spec, demo.app.metrics).execute()
    )
    for outcome in shadow.candidates:
        demo.echo(f"shadow      v{outcome.version}: {outcome.reason}  ({demo.models.label})")
    after = candidates_of(demo.app.engine, demo.spec.name)
    waiting = [v for v, c in after.items() if c.status == "awaiting_approval"]
    return max(waiting) if waiting else None


REFERENCE_PRICES = {"task": "gpt-4o-mini", "judge": "gpt-4o-mini", "reflection": "gpt-4o"}
"""What the demo prices a run at when its own models have no price (simulated or local)."""


def _priced(spend: dict[str, Any], label: str) -> str:
    """The run's tokens, and what they would cost on a provider (litellm's price map)."""
    from sidecar.llm.gateway import load_litellm

    litellm = load_litellm()
    tokens = sum(s.prompt_tokens + s.completion_tokens for s in spend.values())
    spent = sum(s.cost_usd for s in spend.values())
    if spent > 0:
        return f"cost        {tokens} tokens, ${spent:.4f} ({label}, litellm's prices)"
    usd = 0.0
    for role, used in spend.items():
        prompt_usd, completion_usd = litellm.cost_per_token(
            model=REFERENCE_PRICES.get(role, "gpt-4o-mini"),
            prompt_tokens=used.prompt_tokens,
            completion_tokens=used.completion_tokens,
        )
        usd += prompt_usd + completion_usd
    return (
        f"cost        {tokens} tokens; at OpenAI's prices (gpt-4o-mini for task and judge, "
        f"gpt-4o for reflection) this run would cost ${usd:.4f} (litellm's price map)"
    )


def _progress(demo: Demo) -> Callable[[RunReport], None]:
    def line(report: RunReport) -> None:
        demo.echo(
            f"  iteration {report.iterations:>2}  metric calls {report.metric_calls:>3}  "
            f"best v{report.best_version} {report.best_score:.2f}  frontier {len(report.frontier)}"
        )

    return line


def _approve(demo: Demo, version: int, assume_yes: bool, ask: Callable[[str], bool]) -> bool:
    question = f"approve     customer-care v{version} (it passed the shadow gate)? [y/N] "
    if assume_yes:
        demo.echo(question + "yes (--yes)")
    elif not ask(question):
        demo.echo(f"            not approved: v{version} waits in `gepa-sidecar candidates`")
        return False
    token = demo.settings.admin_token.get_secret_value() if demo.settings.admin_token else ""
    started = time.monotonic()
    answer = httpx.post(
        f"{demo.sidecar_url}/v1/prompts/customer-care/candidates/{version}/approve",
        headers={"Authorization": f"Bearer {token}"},
        json={"by": "demo", "note": "approved in the demo"},
        timeout=30,
    )
    answer.raise_for_status()
    _wait(lambda: demo.prompt.version == version, f"the chatbot to load v{version}")
    elapsed = time.monotonic() - started
    demo.echo(
        f"approved    v{version} over HTTP (POST .../approve with the admin token); published to "
        f"file, Kafka and HTTP; the chatbot serves v{version} {elapsed:.2f}s later, no restart"
    )
    return True


def _serve(demo: Demo) -> None:
    token = demo.settings.admin_token.get_secret_value() if demo.settings.admin_token else ""
    json_header = "-H 'content-type: application/json'"
    demo.echo("serving     until Ctrl-C; try:")
    demo.echo(
        f"  chat      curl -s {demo.chatbot_url}/chat {json_header} "
        """-d '{"message": "How do I get a refund?"}'"""
    )
    demo.echo(
        f"  rollback  curl -s -X POST {demo.sidecar_url}/v1/prompts/customer-care/rollback "
        f"""-H 'Authorization: Bearer {token}' {json_header} -d '{{"by": "you"}}'"""
    )
    demo.echo(
        f"  or        SIDECAR_DATABASE_URL={demo.settings.database_url} "
        f"SIDECAR_CONFIG_FILE={demo.settings.config_file} .venv/bin/gepa-sidecar rollback --by you"
    )
    demo.echo(f"  look      {demo.sidecar_url}/  (the admin page; its token: {token})")
    demo.echo(f"  watch     {demo.sidecar_url}/metrics  {demo.sidecar_url}/docs")
    try:
        threading.Event().wait()  # Ctrl-C (or SIGTERM, turned into one by the command) ends it
    except KeyboardInterrupt:
        demo.echo("stopping")


def _mean(scores: list[float]) -> float:
    return sum(scores) / len(scores) if scores else 0.0


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise SidecarError(f"demo: timed out waiting for {what}")
        time.sleep(0.05)
