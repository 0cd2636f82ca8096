"""Simulated models: a deterministic OpenAI-compatible server answering by a `World`'s rules.

The demo serves its judge and reflection roles from here by default (a 135M local model cannot
reflect), and the tests use it as their provider. Never imported by `import sidecar`: it pulls
FastAPI and uvicorn, which only the demo and the tests need.

    from sidecar.simulated import LlmServer
    with LlmServer(CustomerCareWorld()) as server:  # litellm: openai/<any>, api_base=...
        server.api_base
"""

from sidecar.simulated.server import LlmServer, serve_until_stopped
from sidecar.simulated.world import World, instruction_and_evidence, load_world

__all__ = ["LlmServer", "World", "instruction_and_evidence", "load_world", "serve_until_stopped"]
