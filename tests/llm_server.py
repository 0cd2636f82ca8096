"""Our own OpenAI-compatible chat-completions server, deterministic and fast, with faults on demand.

Tests and benchmarks reach it through litellm exactly as they would a real provider
(`openai/<any model>` with `api_base=server.api_base`). Its answers are rules, not a model:

- a judge request (`response_format` schema named `judgment`) scores the reply found between
  `<output>` tags: `score=X` in the reply forces X; otherwise points for naming a next step,
  for courtesy, and for echoing a word of the user's message; feedback says what was missing;
- a pairwise request (schema `pairwise`) prefers the reply the judge rule scores higher, or
  always answers `position_bias` when that is set (to show why both orders are asked);
- a reflection request (it shows "The instruction to improve") fixes the most frequent problem
  the judge's feedback names that the instruction does not yet address, one per call; asked for
  the `proposal` JSON schema, it answers `{"change": ..., "new_text": ...}`;
- anything else is a task call. The reply follows the system prompt's instructions literally:
  it names a next step, thanks the customer, or answers their exact question only when told to.
  With the judge rule this is a small world with a hidden optimum that GEPA can climb.

Those three rules are a `World`; `LlmServer(world=...)` serves another one (tests/hard_world.py).

`fault_rate` injects faults (`fault_kinds`: 429, 500, hang, text) chosen by a seeded RNG, and
`script` forces the kinds of the next requests in order, so every test is reproducible.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections import Counter
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sidecar.runtime.http import HttpServer

FAULT_KINDS = ("429", "500", "hang", "text")
GOOD_WORDS = ("thank", "sorry", "happy to help", "please")
_WORD = re.compile(r"[a-z]{4,}")


def rule_score(user_message: str, reply: str) -> tuple[float, str]:
    """The judge rule: a score in [0, 1] and feedback naming what the reply lacked."""
    forced = re.search(r"score=([0-9.]+)", reply)
    if forced:
        return float(forced.group(1)), f"forced score {forced.group(1)}"
    text = reply.lower()
    missing = []
    score = 0.0
    if "next step" in text:
        score += 0.5
    else:
        missing.append("it does not name the next step")
    if any(word in text for word in GOOD_WORDS):
        score += 0.25
    else:
        missing.append("it is curt")
    if set(_WORD.findall(user_message.lower())) & set(_WORD.findall(text)):
        score += 0.25
    else:
        missing.append("it ignores what the customer asked")
    if not missing:
        return score, "Good reply."
    return score, "The reply falls short: " + "; ".join(missing) + "."


# feedback phrase (from rule_score) → the instruction that fixes it, and how the task rule
# recognises that instruction in a system prompt
FIXES = (
    ("it does not name the next step", "Always end by naming the next step.", "next step"),
    ("it is curt", "Thank the customer warmly.", "thank"),
    ("it ignores what the customer asked", "Answer the customer's exact question.", "question"),
)


def task_reply(system: str, user: str) -> str:
    """The task rule: a reply that does what the system prompt says, and nothing more."""
    rules = system.lower()
    parts = []
    if "thank" in rules:
        parts.append("Thank you for reaching out.")
    if "question" in rules:
        parts.append(f"About '{user}': here is the answer.")
    else:
        parts.append("We have received your message.")
    if "next step" in rules:
        parts.append("Next step: we will follow up by email today.")
    return " ".join(parts)


def reflect(prompt: str) -> str:
    """The reflection rule: add the fix for the most frequent unaddressed problem, unless the
    prompt says that fix was already tried. It reads any meta-prompt that shows the current
    instruction in the first ``` block and the judge's feedback somewhere after it (ours, or
    the `gepa` library's default template)."""
    current = re.search(r"```[^\n]*\n(.*?)\n```", prompt, re.S)
    text = current.group(1).strip() if current else ""
    evidence = (prompt[current.end() :] if current else prompt).lower()
    pending = [
        (evidence.count(problem), fix)
        for problem, fix, marker in FIXES
        if problem in evidence and marker not in text.lower() and f"'{fix}'" not in prompt
    ]
    if not pending:
        return f"Change: said the same thing more briefly.\n```\n{text} Be brief.\n```"
    _, fix = max(pending, key=lambda item: item[0])
    return f"Change: added '{fix}' because the feedback asks for it.\n```\n{text} {fix}\n```"


class World(Protocol):
    """The rules a server answers by: a task model, a judge and a reflection model."""

    def task(self, system: str, user: str) -> str: ...

    def judge(self, user_message: str, reply: str) -> tuple[float, str]: ...

    def reflect(self, prompt: str) -> str: ...


class SimpleWorld:
    """Three fixes from the seed to a perfect score, a noise-free judge."""

    def task(self, system: str, user: str) -> str:
        return task_reply(system, user)

    def judge(self, user_message: str, reply: str) -> tuple[float, str]:
        return rule_score(user_message, reply)

    def reflect(self, prompt: str) -> str:
        return reflect(prompt)


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


REFLECTION_MARKERS = ("The instruction to improve", "I provided an assistant with the following")


def _tagged(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.S)
    return match.group(1) if match else ""


def _input_values(text: str) -> str:
    """What the user said: the values of the judge prompt's `key: value` input lines."""
    return " ".join(line.split(": ", 1)[-1] for line in _tagged(text, "inputs").splitlines())


class LlmServer:
    """Start with `start()`; point litellm at `api_base`. Attributes may change between calls."""

    def __init__(self, latency_s: float = 0.0, seed: int = 7, world: World | None = None) -> None:
        self.world: World = world or SimpleWorld()
        self.latency_s = latency_s
        self.fault_rate = 0.0
        self.fault_kinds: tuple[str, ...] = FAULT_KINDS
        self.script: list[str] = []
        self.hang_s = 30.0
        self.position_bias: str | None = None
        self.refuse_response_format = False
        self.inflight = 0
        self.max_inflight = 0
        self.requests: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._http = HttpServer(self._build(), "127.0.0.1", 0)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self._http.port}/v1"

    def start(self) -> LlmServer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._http.stop()

    def __enter__(self) -> LlmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_fault(self) -> str | None:
        with self._lock:
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
            fault = self._next_fault()
            with self._lock:
                self.requests[fault or "ok"] += 1
                self.bodies.append(body)
                self.authorizations.append(request.headers.get("authorization"))
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
            "model": body.get("model", "test"),
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
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        prompt = str(messages[-1].get("content", "")) if messages else ""
        if any(marker in prompt for marker in REFLECTION_MARKERS):
            reply = self.world.reflect(prompt)
            return as_proposal_json(reply) if schema == "proposal" else reply
        if schema == "judgment" or "<output>" in prompt:
            score, feedback = self.world.judge(_input_values(prompt), _tagged(prompt, "output"))
            return json.dumps({"score": score, "feedback": feedback})
        if schema == "pairwise" or "<output_a>" in prompt:
            user = _input_values(prompt)
            a, _ = self.world.judge(user, _tagged(prompt, "output_a"))
            b, _ = self.world.judge(user, _tagged(prompt, "output_b"))
            winner = self.position_bias or ("A" if a > b else "B" if b > a else "tie")
            return json.dumps({"winner": winner, "feedback": f"A scored {a}, B scored {b}."})
        system = next((str(m["content"]) for m in messages if m.get("role") == "system"), "")
        return self.world.task(system, prompt)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": code, "code": code}}, status_code=status
    )


def main() -> None:
    """`python -m tests.llm_server [--latency S] [--world hard --world-seed N]`: print the
    api_base, serve until SIGTERM (for benchmarks, which keep the server off the measured
    process's GIL)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--world", choices=("simple", "hard"), default="simple")
    parser.add_argument("--world-seed", type=int, default=0)
    args = parser.parse_args()
    world: World = SimpleWorld()
    if args.world == "hard":
        from tests.hard_world import HardWorld

        world = HardWorld(seed=args.world_seed)
    server = LlmServer(latency_s=args.latency, world=world).start()
    print(server.api_base, flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    main()
