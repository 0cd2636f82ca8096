"""`python -m sidecar.simulated [--world module:name] [--port N] [--latency S]`: serve a world's
simulated models until SIGTERM or Ctrl-C; the first line printed is the api_base to give
litellm (`openai/<any model>`). Run from the repository root for the example's world."""

from __future__ import annotations

import argparse
import sys

from sidecar.errors import ConfigError
from sidecar.simulated.server import LlmServer, serve_until_stopped
from sidecar.simulated.world import load_world

DEFAULT_WORLD = "examples.customer_care.world:CustomerCareWorld"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.simulated", description=__doc__)
    parser.add_argument("--world", default=DEFAULT_WORLD, help=f"default: {DEFAULT_WORLD}")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    args = parser.parse_args(argv)
    try:
        server = LlmServer(load_world(args.world), latency_s=args.latency, port=args.port)
        serve_until_stopped(server)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
