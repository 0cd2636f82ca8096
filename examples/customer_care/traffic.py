"""The example chatbot's customers: the bundled messages, sent to its `POST /chat` the way a load
generator replays recorded conversations.

    python -m examples.customer_care.traffic --url http://127.0.0.1:8000 --count 40
"""

from __future__ import annotations

import argparse
import json
import random
import urllib.request
from typing import Any

from examples.customer_care.messages import MESSAGES


def drive(
    chatbot_url: str, count: int, seed: int = 0, timeout_s: float = 120.0
) -> list[tuple[str, dict[str, Any]]]:
    """Send `count` messages (every bundled one in turn, shuffled by `seed`); (message, reply)."""
    order = list(MESSAGES)
    random.Random(seed).shuffle(order)
    replies = []
    for index in range(count):
        message = order[index % len(order)]
        body = json.dumps({"message": message.text, "segment": message.segment}).encode()
        request = urllib.request.Request(
            f"{chatbot_url}/chat", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            replies.append((message.text, json.loads(response.read())))
    return replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for message, reply in drive(args.url, args.count, args.seed):
        print(f"v{reply['prompt_version']}  {message}  ->  {reply['reply']}")


if __name__ == "__main__":
    main()
