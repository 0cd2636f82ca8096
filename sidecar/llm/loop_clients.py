"""An event loop that calls models closes the HTTP clients litellm made for it before it ends.

litellm caches one client per provider setting and event loop, and never closes a client when
its loop ends (BerriAI/litellm#31245, #40490). Every optimization run and shadow pass is an
`asyncio.run` of its own, so each would leave its sockets open until the garbage collector
found them: a file-descriptor leak in a process that lives for months. (Closing them also
gives litellm's queued per-call logging tasks the loop turns they need to finish here, rather
than be carried to the next loop that calls a model and pile up.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from sidecar.llm.gateway import load_litellm

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_with_models(work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`, then close this loop's litellm clients while it still runs."""

    async def scoped() -> T:
        try:
            return await work
        finally:
            await close_loop_clients()

    return asyncio.run(scoped())


async def close_loop_clients() -> int:
    """Close and forget the clients litellm cached for the running loop; how many it closed.

    Only this loop's: another thread's loop (the judge worker's) may be using its own."""
    litellm = load_litellm()
    from litellm.caching.evicted_client_closer import running_loop_token

    token = running_loop_token()
    if token is None:
        return 0
    cache = litellm.in_memory_llm_clients_cache
    closed = 0
    for key in [key for key in list(cache.cache_dict) if key.endswith(f"-{token}")]:
        client = cache.cache_dict.get(key)
        cache.delete_cache(key)
        close = getattr(client, "aclose", None) or getattr(client, "close", None)
        if close is None:
            continue
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
            closed += 1
        except Exception as exc:  # a client that cannot close is the GC's again, as before
            log.debug("closing a model client failed: %s", exc)
    return closed
