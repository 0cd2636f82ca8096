"""The embedded local model: a real llama.cpp child process, reached through our gateway.

The `slow` test runs the bundled SmolLM2-135M judge end to end and checks structure only (a
model this small judges only directionally); it takes seconds, and `make test` runs it. The
fast ones check that a bad model path fails at once, in one line, and leaves no child process
behind.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import pytest

from sidecar.errors import ConfigError, LlmError
from sidecar.llm.loop_clients import run_with_models
from sidecar.runtime.local_model import LocalModelServer
from tests.helpers import scaled

REPLIES = (
    (
        "Where is my order #1234?",
        "Sorry for the wait! Order #1234 shipped yesterday and arrives Friday. Next step: track "
        "it with the link in your confirmation email.",
    ),
    ("Can I get a refund for a broken mug?", "Mugs are made of ceramic."),
    (
        "How do I change my delivery address?",
        "Go to Orders > Edit address before the order ships; after that, reply here and we "
        "will redirect it.",
    ),
)


def _children() -> set[int]:
    """PIDs of this process's live children (Linux /proc), to prove none is left behind."""
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[1] == me and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def test_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    before = _children()
    with pytest.raises(ConfigError, match="SIDECAR_LOCAL_MODEL_PATH") as raised:
        LocalModelServer(tmp_path / "absent.gguf")
    assert "\n" not in str(raised.value)
    assert _children() == before


@pytest.mark.parametrize(
    "content",
    [b"this is not a model\n" * 10, b"GGUF\x03\x00\x00\x00" + b"\x00garbage" * 16],
    ids=["not-gguf", "broken-gguf"],
)
def test_a_file_that_is_not_a_model_fails_start_quickly(tmp_path: Path, content: bytes) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(content)
    before = _children()
    server = LocalModelServer(junk)
    with pytest.raises(LlmError) as raised:
        server.start()
    message = str(raised.value)
    assert raised.value.retryable is False
    assert "\n" not in message
    assert str(junk) in message
    assert "local_model:" in message  # the child's own last line, not just "it died"
    assert server.pid is None
    assert server.exit_code not in (None, 0)
    assert _children() == before


@pytest.mark.slow
def test_bundled_model_judges_replies_through_the_gateway() -> None:
    from sidecar.judge.judge import Judge
    from sidecar.judge.rubric import DEFAULT_RUBRIC
    from sidecar.judge.verdict import Verdict
    from sidecar.llm.gateway import Gateway, load_litellm
    from sidecar.settings import load_settings

    load_litellm()  # import it outside the timings below
    before = _children()
    started = time.monotonic()
    with LocalModelServer() as server:
        startup_s = time.monotonic() - started
        health_url = server.api_base.removesuffix("/v1") + "/health"
        with urllib.request.urlopen(health_url, timeout=scaled(10)) as health:
            assert health.status == 200

        settings = load_settings(
            judge_model="openai/local", judge_api_base=server.api_base, llm_timeout_s=scaled(60)
        )
        judge = Judge(Gateway(settings), DEFAULT_RUBRIC)

        async def judge_all() -> list[tuple[float, Verdict]]:
            timed: list[tuple[float, Verdict]] = []
            for user_message, reply in REPLIES:
                began = time.monotonic()
                verdict = await judge.score({"user_message": user_message}, reply)
                timed.append((time.monotonic() - began, verdict))
            return timed

        results = run_with_models(judge_all())
    print(f"\nlocal model ready in {startup_s:.2f}s")
    for (seconds, verdict), (_, reply) in zip(results, REPLIES, strict=True):
        print(f"{seconds:.2f}s {verdict!r} <- {reply[:40]!r}")

    for _, verdict in results:
        assert 0.0 <= verdict.score <= 1.0
        assert verdict.feedback.strip()
    assert server.exit_code == 0  # SIGTERM ends it cleanly
    assert _children() == before
