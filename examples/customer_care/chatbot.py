"""The example customer-care chatbot: a small FastAPI service, as a team would write it, that
answers through litellm with the prompt the sidecar publishes and sends what it answered back to
the sidecar.

Two lines of it are about gepa-sidecar: `HotPrompt` follows the published prompt (a new version
is picked up without a restart) and `TrafficEmitter` sends each request and reply to the traffic
topic (it drops rather than slow or break a reply when Kafka is away).

    python -m examples.customer_care.chatbot --port 8000   # env: see `main`
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from sidecar.client import HotPrompt, TrafficEmitter

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: the bundled prices
import litellm

NAME = "customer-care"
CONFIG = Path(__file__).with_name("config.yaml")
MAX_REPLY_TOKENS = 200  # a chat reply, not an essay (small local models ramble on otherwise)


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=4000)
    segment: str | None = Field(default=None, max_length=100)


class ChatReply(BaseModel):
    reply: str
    prompt_version: int


def prompt_spec(config: Path = CONFIG) -> dict[str, Any]:
    """The prompt as the sidecar manages it: its seed (the fallback) and its task template."""
    prompts = yaml.safe_load(config.read_text(encoding="utf-8"))["prompts"]
    return next(p for p in prompts if p["name"] == NAME)


def hot_prompt(source: str, config: Path = CONFIG) -> HotPrompt:
    spec = prompt_spec(config)
    return HotPrompt(NAME, source, template=spec["task"]["messages"], fallback=spec["seed"])


def create_chatbot(
    prompt: HotPrompt,
    emitter: TrafficEmitter | None,
    model: str,
    api_base: str | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """The service. `prompt` and `emitter` are started and closed by whoever runs it."""
    app = FastAPI(title="customer-care chatbot")

    @app.post("/chat")
    async def chat(request: ChatRequest) -> ChatReply:
        messages = prompt.render(user_message=request.message)
        version = prompt.version or 1  # the bundled seed is version 1
        started = time.monotonic()
        try:
            response = await litellm.acompletion(
                model=model,
                messages=messages,
                api_base=api_base,
                # an OpenAI-compatible local server wants some key, and ignores it
                api_key=api_key or ("unused" if api_base else None),
                max_tokens=MAX_REPLY_TOKENS,
                timeout=60,
            )
        except Exception as exc:  # the provider's failure is the user's 502, never a crash
            raise HTTPException(502, f"the model failed: {type(exc).__name__}") from exc
        text = response.choices[0].message.content or ""
        if emitter is not None:
            emitter.emit(
                {"user_message": request.message},
                text,
                version,
                trace={"model": model, "latency_ms": int((time.monotonic() - started) * 1000)},
                metadata={"segment": request.segment} if request.segment else None,
            )
        return ChatReply(reply=text, prompt_version=version)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "prompt_version": prompt.version}

    return app


def main() -> None:
    """Serve the chatbot. CHATBOT_MODEL / CHATBOT_API_BASE / CHATBOT_API_KEY: its model;
    PROMPT_SOURCE: where the sidecar publishes (file://, http:// or kafka://);
    SIDECAR_KAFKA_BOOTSTRAP_SERVERS: where traffic goes (unset: nowhere)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    prompt = hot_prompt(os.environ.get("PROMPT_SOURCE", "file://./prompts/customer-care.json"))
    servers = os.environ.get("SIDECAR_KAFKA_BOOTSTRAP_SERVERS")
    emitter = TrafficEmitter(servers, prompt_name=NAME) if servers else None
    app = create_chatbot(
        prompt,
        emitter,
        os.environ.get("CHATBOT_MODEL", "openai/gpt-4o-mini"),
        os.environ.get("CHATBOT_API_BASE"),
        os.environ.get("CHATBOT_API_KEY"),
    )
    with prompt:
        try:
            uvicorn.run(app, host="127.0.0.1", port=args.port)
        finally:
            if emitter is not None:
                emitter.close(5.0)


if __name__ == "__main__":
    main()
