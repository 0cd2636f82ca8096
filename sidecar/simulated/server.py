"""A deterministic OpenAI-compatible chat-completions server whose answers are a `World`'s
rules, not a model: the demo's "simulated models", and the tests' provider.

litellm reaches it exactly as it would a real provider (`openai/<any model>` with
`api_base=server.api_base`). Each request goes to one rule:

- a reflection request (it opens with one of REFLECTION_MARKERS) to `world.reflect`; asked for
  the `proposal` JSON schema, its `Change:` line and ``` block come back as
  `{"change": ..., "new_text": ...}`;
- a judge request (schema `judgment`, or an `<output>` tag) to `world.judge` on the values of
  its `<inputs>` lines and the reply between `<output>` tags;
- a pairwise request (schema `pairwise`) prefers the reply `world.judge` scores higher, or always
  answers `position_bias` when that is set (to show why both orders are asked);
- anything else to `world.task` with the system message and the last message.

Faults on demand keep every test reproducible: `fault_rate` injects `fault_kinds` (429; 429ra,
a 429 with a `Retry-After: <retry_after>` header; 500; hang; text) chosen by a seeded RNG,
`script` forces the kinds of the next requests in order, and `stalls` makes every request of a
kind (reflection, judge, pairwise, task) after the first N hang (a provider that stops
answering mid-run).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import threading
import time
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sidecar.errors import ConfigError
from sidecar.runtime.http import HttpServer
from sidecar.simulated.world import REFLECTION_MARKERS, World

FAULT_KINDS = ("429", "429ra", "500", "hang", "text")
HOST = "127.0.0.1"
_CHANGE_LINE = re.compile(r"change:\s*(.*)", re.I)
_BLOCK = re.compile(r"```[^\n]*\n(.*)\n```", re.S)


def as_proposal_json(reply: str) -> str:
    """A `Change:` line and fenced block reply, as the `proposal` JSON schema asks for it."""
    change = _CHANGE_LINE.search(reply)
    block = _BLOCK.search(reply)
    return json.dumps(
        {
            "change": change.group(1).strip() if change else "",
            "new_text": block.group(1).strip() if block else "",
        }
    )


def _tagged(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.S)
    return match.group(1) if match else ""


def _input_values(text: str) -> str:
    """What the user said: the values of the judge prompt's `key: value` input lines."""
    return " ".join(line.split(": ", 1)[-1] for line in _tagged(text, "inputs").splitlines())


class LlmServer:
    """Start with `start()` (or `with`); point litellm at `api_base`. The fault attributes may
    change between calls; `requests`, `bodies`, `authorizations` and `arrivals` (monotonic
    seconds) record what arrived."""

    def __init__(
        self, world: World, *, latency_s: float = 0.0, seed: int = 7, port: int = 0
    ) -> None:
        self.world = world
        self.latency_s = latency_s
        self.fault_rate = 0.0
        self.fault_kinds: tuple[str, ...] = FAULT_KINDS
        self.script: list[str] = []
        self.stalls: dict[str, int] = {}
        self.hang_s = 30.0
        self.retry_after = "1"
        self.position_bias: str | None = None
        self.refuse_response_format = False
        self.inflight = 0
        self.max_inflight = 0
        self.requests: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.arrivals: list[float] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._port = port
        self._http = HttpServer(self._build(), HOST, port)

    @property
    def api_base(self) -> str:
        return f"http://{HOST}:{self._http.port}/v1"

    def start(self) -> LlmServer:
        try:
            self._http.start()
        except ConfigError as exc:
            raise ConfigError(f"simulated models: cannot listen on {HOST}:{self._port}") from exc
        return self

    def stop(self) -> None:
        self._released.set()
        self._http.stop()

    def __enter__(self) -> LlmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_fault(self, kind: str) -> str | None:
        with self._lock:
            self.kinds[kind] += 1
            if kind in self.stalls and self.kinds[kind] > self.stalls[kind]:
                return "hang"
            if self.script:
                kind = self.script.pop(0)
                return None if kind == "ok" else kind
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
            return None

    def _build(self) -> FastAPI:
        api = FastAPI()

        @api.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            if self.refuse_response_format and "response_format" in body:
                return _error(400, "invalid_request_error", "response_format is not supported")
            fault = self._next_fault(request_kind(body))
            with self._lock:
                self.requests[fault or "ok"] += 1
                self.bodies.append(body)
                self.authorizations.append(request.headers.get("authorization"))
                self.arrivals.append(time.monotonic())
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                return await self._respond(body, fault)
            finally:
                with self._lock:
                    self.inflight -= 1

        return api

    async def _respond(self, body: dict[str, Any], fault: str | None) -> JSONResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            return _error(429, "rate_limit_exceeded", "Rate limit reached, slow down")
        if fault == "429ra":
            response = _error(429, "rate_limit_exceeded", "Rate limit reached, retry later")
            response.headers["Retry-After"] = self.retry_after
            return response
        if fault == "500":
            return _error(500, "server_error", "The server had an error")
        if fault == "hang":
            deadline = time.monotonic() + self.hang_s
            while time.monotonic() < deadline and not self._released.is_set():
                await asyncio.sleep(0.05)
            return _error(504, "timeout", "hung")
        content = "I cannot answer that in JSON, sorry." if fault == "text" else None
        return JSONResponse(self._completion(body, content))

    def _completion(self, body: dict[str, Any], content: str | None) -> dict[str, Any]:
        messages = body.get("messages", [])
        text_in = " ".join(str(m.get("content", "")) for m in messages)
        if content is None:
            content = self._answer(body, messages)
        return {
            "id": f"chatcmpl-{len(self.bodies)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "simulated"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(text_in.split()),
                "completion_tokens": len(content.split()),
                "total_tokens": len(text_in.split()) + len(content.split()),
            },
        }

    def _answer(self, body: dict[str, Any], messages: list[dict[str, Any]]) -> str:
        kind, schema, prompt = request_kind(body), _schema(body), _last_message(body)
        if kind == "reflection":
            reply = self.world.reflect(prompt)
            return as_proposal_json(reply) if schema == "proposal" else reply
        if kind == "judge":
            score, feedback = self.world.judge(_input_values(prompt), _tagged(prompt, "output"))
            return json.dumps({"score": score, "feedback": feedback})
        if kind == "pairwise":
            user = _input_values(prompt)
            a, _ = self.world.judge(user, _tagged(prompt, "output_a"))
            b, _ = self.world.judge(user, _tagged(prompt, "output_b"))
            winner = self.position_bias or ("A" if a > b else "B" if b > a else "tie")
            return json.dumps({"winner": winner, "feedback": f"A scored {a}, B scored {b}."})
        system = next((str(m["content"]) for m in messages if m.get("role") == "system"), "")
        return self.world.task(system, prompt)


def _schema(body: dict[str, Any]) -> str | None:
    name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
    return None if name is None else str(name)


def _last_message(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return str(messages[-1].get("content", "")) if messages else ""


def request_kind(body: dict[str, Any]) -> str:
    """Which rule answers a request: reflection, judge, pairwise or task."""
    schema, prompt = _schema(body), _last_message(body)
    if any(marker in prompt for marker in REFLECTION_MARKERS):
        return "reflection"
    if schema == "judgment" or "<output>" in prompt:
        return "judge"
    if schema == "pairwise" or "<output_a>" in prompt:
        return "pairwise"
    return "task"


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": code, "code": code}}, status_code=status
    )


def serve_until_stopped(server: LlmServer) -> None:
    """Start `server`, print its api_base (the one line a parent process reads), and serve
    until SIGTERM or SIGINT."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    server.start()
    try:
        print(server.api_base, flush=True)
        stopped.wait()
    finally:
        server.stop()
