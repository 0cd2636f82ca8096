"""The serving app's side of the loop, importable without the sidecar's server dependencies
(no litellm, SQLAlchemy, FastAPI, APScheduler, Alembic, uvicorn):

- HotPrompt: the published prompt version, hot-reloaded from a file, the sidecar's HTTP API or
  the prompts topic, with a bundled fallback; `render(**inputs)` builds the chat messages the
  way the sidecar's replays do.
- TrafficEmitter: sampled TrafficEvents to the traffic topic, through a bounded queue that
  never blocks the app.
"""

from sidecar.client.emitter import TrafficEmitter
from sidecar.client.hot_prompt import HotPrompt

__all__ = ["HotPrompt", "TrafficEmitter"]
