"""The one way the sidecar calls a model. Every role (judge, task, reflection) gets its model and
`api_base` from settings, a hard timeout, bounded retries with backoff and jitter on 429, 5xx and
timeouts, a concurrency limit, and its tokens and USD in the ledger and in Prometheus. A call that
fails for good is counted by role and kind of error, and told (rate-limited, see failures.py) in
the log and to an optional sink that keeps it for `status`.

litellm is imported on first use (it takes seconds and ~190 MB), never at module import, and is
told to use its bundled cost map instead of fetching one from the internet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

from sidecar.errors import LlmError
from sidecar.llm.backoff import backoff_delay, retry_after_s
from sidecar.llm.failures import FailureLog, FailureNotice, FailureSink
from sidecar.llm.ledger import Ledger
from sidecar.metrics import Metrics
from sidecar.settings import Settings

log = logging.getLogger(__name__)

ROLES = ("judge", "task", "reflection")
UNUSED_API_KEY = "unused"  # OpenAI-compatible local servers want some key; they ignore it
_RETRYABLE_STATUS = {408, 409, 425, 429}
_WRAPPING = re.compile(r"^(?:litellm\.\w+:\s*)?(?:\w+Error:\s*)?(?:\w+Exception\s*-\s*)?")
"""litellm's `litellm.InternalServerError: InternalServerError: OpenAIException - ` before the
provider's own words."""

# litellm trips pydantic notices about `ReadOnly` TypedDict items as it imports (lazily, on
# any thread). The filter is set here, at import on the main thread, because a filter added
# later can be undone by another thread's `warnings.catch_warnings()` (FastAPI uses one).
warnings.filterwarnings(
    "ignore", message=r"Items? .* using the `ReadOnly` qualifier", category=UserWarning
)

_litellm_module: Any = None
_litellm_lock = threading.Lock()


def load_litellm() -> Any:
    """Import and set up litellm once, offline; safe to call from any thread (e.g. to warm it)."""
    global _litellm_module
    with _litellm_lock:
        if _litellm_module is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                chatty = logging.getLogger(name)  # not a line per call; a quieter choice stays
                chatty.setLevel(max(chatty.level, logging.WARNING))
                chatty.handlers.clear()  # its own console handler: the process's one (LOG_FORMAT)
            _litellm_module = litellm
        return _litellm_module


@dataclass(frozen=True)
class RoleModel:
    model: str
    api_base: str | None
    api_key: str | None
    concurrency: int


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    attempts: int


class Gateway:
    """Async calls for every role. Concurrency limits are per role and per event loop.
    `failures` tells and counts the calls that failed for good; `sink` keeps what it tells."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        sink: FailureSink | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = sink
        self.failures = FailureLog()
        self.ledger = Ledger()
        self.roles = {role: _role_model(settings, role) for role in ROLES}
        self._rng = rng or random.Random()
        self._limits: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()
        self._schema_refused: set[str] = set()

    def _limit(self, role: str) -> asyncio.Semaphore:
        per_loop = self._limits.setdefault(asyncio.get_running_loop(), {})
        if role not in per_loop:
            per_loop[role] = asyncio.Semaphore(self.roles[role].concurrency)
        return per_loop[role]

    def accepts_schema(self, role: str) -> bool:
        """Whether to ask this role's model for JSON-schema output (`response_format`)."""
        choice = self.settings.judge_response_format
        if choice != "auto":
            return choice == "json_schema"
        if role in self._schema_refused:
            return False
        spec = self.roles[role]
        if spec.api_base:
            return True  # OpenAI-compatible servers (llama.cpp, vLLM, Ollama) take json_schema
        try:
            return bool(load_litellm().supports_response_schema(model=spec.model))
        except Exception:
            return False

    async def complete(
        self,
        role: str,
        messages: list[dict[str, str]],
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float = 0.0,
    ) -> Completion:
        """One completion with retries; raises `LlmError` once retries are spent or on a refusal.

        A provider that refuses `response_format` (HTTP 400) is asked again without it, and the
        role stops asking for it; the caller parses the reply defensively either way.
        """
        spec = self.roles[role]
        settings = self.settings
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._limit(role):
                    response = await self._call(
                        spec, role, messages, response_format, max_tokens, temperature
                    )
                break
            except LlmError as exc:
                if exc.retryable and attempt <= settings.llm_max_retries:
                    delay = backoff_delay(
                        attempt - 1,
                        settings.llm_backoff_base_s,
                        settings.llm_backoff_cap_s,
                        self._rng,
                    )
                    if exc.retry_after_s is not None:
                        delay = max(delay, min(exc.retry_after_s, settings.llm_backoff_cap_s))
                    log.debug("%s call failed (%s); retry %d in %.2fs", role, exc, attempt, delay)
                    await asyncio.sleep(delay)
                    continue
                if response_format is not None and exc.status == 400:
                    log.warning("%s model refused response_format; parsing free text", role)
                    self._schema_refused.add(role)
                    response_format = None
                    continue
                await self._failed(role, exc)
                raise
        self.failures.succeeded(role)
        return self._account(role, response, attempt)

    async def _failed(self, role: str, exc: LlmError) -> None:
        """Count a call that failed for good; log and keep a notice when one is due. Keeping it
        may fail (the database is down too): that never changes the call's own outcome."""
        if self.metrics is not None:
            self.metrics.llm_errors.labels(role, exc.kind).inc()
        notice = self.failures.failed(role, exc.kind, exc.detail, str(exc))
        if notice is None:
            return
        try:
            await asyncio.to_thread(self._tell, notice)  # the sink may write to a database
        except RuntimeError:  # no thread to be had (the interpreter is exiting)
            log.warning("%s", notice.line())

    def tell_pending(self) -> None:
        """Log and keep the failures counted since their last notice (for a run that ends)."""
        for notice in self.failures.pending():
            self._tell(notice)

    def _tell(self, notice: FailureNotice) -> None:
        log.warning("%s", notice.line())
        if self.sink is None:
            return
        try:
            self.sink.record(notice)
        except Exception as problem:
            log.debug("cannot keep the %s model's failure: %s", notice.role, problem)

    async def _call(
        self,
        spec: RoleModel,
        role: str,
        messages: list[dict[str, str]],
        response_format: dict[str, Any] | None,
        max_tokens: int | None,
        temperature: float,
    ) -> Any:
        litellm = load_litellm()
        kwargs: dict[str, Any] = {
            "model": spec.model,
            "messages": messages,
            "timeout": self.settings.llm_timeout_s,
            "num_retries": 0,
            "max_retries": 0,
            "temperature": temperature,
        }
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
            kwargs["api_key"] = spec.api_key or UNUSED_API_KEY
        elif spec.api_key:
            kwargs["api_key"] = spec.api_key
        if response_format is not None:
            kwargs["response_format"] = response_format
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.llm_timeout_s + 1.0):
                return await litellm.acompletion(**kwargs)
        except TimeoutError:
            raise LlmError(
                f"{role} model timed out after {self.settings.llm_timeout_s:g}s",
                retryable=True,
                kind="timeout",
                detail=f"no answer within {self.settings.llm_timeout_s:g}s",
            ) from None
        except Exception as exc:
            raise _classify(role, exc) from exc
        finally:
            if self.metrics is not None:
                self.metrics.llm_request_duration.labels(role).observe(
                    time.perf_counter() - started
                )

    def _account(self, role: str, response: Any, attempts: int) -> Completion:
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = _cost(response)
        self.ledger.record(role, prompt_tokens, completion_tokens, cost)
        if self.metrics is not None:
            self.metrics.llm_tokens.labels(role, "prompt").inc(prompt_tokens)
            self.metrics.llm_tokens.labels(role, "completion").inc(completion_tokens)
            self.metrics.llm_cost.labels(role).inc(cost or 0.0)
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        text = getattr(message, "content", None) or ""
        return Completion(str(text), prompt_tokens, completion_tokens, cost, attempts)


def _role_model(settings: Settings, role: str) -> RoleModel:
    model, api_base, key = settings.model_of(role)
    return RoleModel(
        model=model,
        api_base=api_base,
        api_key=key.get_secret_value() if key is not None else None,
        concurrency=getattr(settings, f"{role}_concurrency"),
    )


def _cost(response: Any) -> float | None:
    """USD from litellm's cost map (litellm prices each response as it returns it), or None
    when the model has no price there."""
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    return float(cost) if cost else None


def _classify(role: str, exc: Exception) -> LlmError:
    """Turn a litellm exception into an LlmError that knows whether a retry may help, and what
    kind of failure it was. litellm reports a request its provider SDK refused to send (no
    credentials) and a refused connection as a made-up HTTP 500; the SDK's own error under it
    says which: the first is never worth a retry."""
    litellm = load_litellm()
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    transient = (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
    )
    retryable = isinstance(exc, transient) or (
        status is not None and (status >= 500 or status in _RETRYABLE_STATUS)
    )
    kind = type(exc).__name__
    detail = _WRAPPING.sub("", " ".join(str(exc).split()))[:300] or kind
    sdk = _sdk_error(exc)
    if sdk is not None:
        import openai

        if not isinstance(sdk, openai.APIError):  # raised before any request was sent
            retryable, status = False, None
            words = str(sdk).lower()
            credentials = "credential" in words or "api_key" in words
            kind = "AuthenticationError" if credentials else "ClientError"
        elif isinstance(sdk, openai.APITimeoutError):
            kind = "timeout"
        elif isinstance(sdk, openai.APIConnectionError):
            kind, status = "APIConnectionError", None
    response = getattr(exc, "response", None)
    return LlmError(
        f"{role} model call failed: {kind}: {detail}",
        retryable=retryable,
        status=status,
        retry_after_s=retry_after_s(getattr(response, "headers", None)),
        kind=kind,
        detail=detail,
    )


def _sdk_error(exc: BaseException) -> BaseException | None:
    """The OpenAI SDK's exception under litellm's, if there is one."""
    import openai

    seen: BaseException | None = exc
    for _ in range(8):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return None
        if type(seen).__module__.split(".")[0] == "openai" and isinstance(seen, openai.OpenAIError):
            return seen
    return None
