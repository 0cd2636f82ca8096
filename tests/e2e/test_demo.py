"""`gepa-sidecar demo` as a newcomer runs it, on the simulated models: the scripted part closes
the loop (traffic through the example chatbot, judged, optimized, shadowed, approved, hot
reloaded) and the chatbot's score rises, with every screen that shows scores labelled."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.helpers import scaled

REPO = Path(__file__).resolve().parents[2]


def run_demo(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--data-dir", str(tmp_path), *options],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=scaled(300),
        check=False,
    )


def test_the_demo_closes_the_loop_and_the_chatbot_serves_the_approved_prompt(
    tmp_path: Path,
) -> None:
    # as `make demo` runs without a terminal: it approves as --yes would and does not serve
    result = run_demo(tmp_path, "--port", "0", "--chatbot-port", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("demo        no terminal to ask on: it approves as --yes would")
    assert "models      simulated models" in out
    approved = re.search(r"approved    v(\d+) over HTTP .* the chatbot serves v(\d+) ", out)
    assert approved is not None, out
    assert approved[1] == approved[2] != "1"
    assert "yes (--yes)" in out
    result_line = re.search(r"mean judge score ([0-9.]+) with v1 -> ([0-9.]+) with v(\d+)", out)
    assert result_line is not None, out
    assert float(result_line[2]) > float(result_line[1])
    assert result_line[3] == approved[1]
    assert f"v{approved[1]} bot" in out  # the chatbot answered with the new version
    assert all("simulated models" in line for line in out.splitlines() if "judged " in line)
    published = (tmp_path / "prompts" / "customer-care.json").read_text()
    assert f'"version": {approved[1]}' in published


def test_the_demo_serves_until_it_is_told_to_stop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    command = [sys.executable, "-m", "sidecar", "demo", "--data-dir", str(tmp_path), "--yes"]
    process = subprocess.Popen(
        [*command, "--port", "0", "--chatbot-port", "0"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    serving = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.lstrip().startswith("watch "):  # the last line before it waits
                serving.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert serving.wait(scaled(300)), "".join(lines[-40:])
        chat = next(line for line in lines if line.strip().startswith("chat "))
        url = re.search(r"(http://127\.0\.0\.1:\d+)/chat", chat)
        assert url is not None
        reply = httpx.post(f"{url[1]}/chat", json={"message": "Where is my refund?"}, timeout=30)
        assert reply.json()["prompt_version"] > 1
        look = next(line for line in lines if line.strip().startswith("look "))
        admin = re.search(r"(http://127\.0\.0\.1:\d+/)  \(the admin page; its token: \S+\)", look)
        assert admin is not None, look
        page = httpx.get(admin[1], timeout=30)
        assert page.status_code == 200
        active = re.search(r'Active version:\s*<a class="active-version" [^>]*>v(\d+)<', page.text)
        assert active is not None and int(active[1]) == reply.json()["prompt_version"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=scaled(60)) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(scaled(10))
        if process.stdout is not None:
            process.stdout.close()
    assert lines[-1].strip() == "stopping"


def test_bad_demo_options_are_one_line_errors_before_anything_starts(tmp_path: Path) -> None:
    for options, message in [
        (("--models", "cloud"), "error: --models: must be simulated or local (got 'cloud')"),
        (("--traffic", "5"), "error: --traffic: at least 20 messages a round (got 5)"),
    ]:
        result = run_demo(tmp_path, *options)
        assert (result.returncode, result.stderr.strip()) == (2, message)
    assert not (tmp_path / "sidecar.db").exists()


def test_a_taken_chatbot_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_demo(tmp_path, "--port", "0", "--chatbot-port", str(port))
    assert result.returncode == 2
    # (uvicorn logs its own bind error above it)
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: --chatbot-port: cannot listen on 127.0.0.1:{port}"
