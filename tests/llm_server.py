"""The tests' world for our simulated models (sidecar/simulated/): its rules, and the server
started with it by default, so tests and benchmarks reach it through litellm exactly as they
would a real provider (`openai/<any model>` with `api_base=server.api_base`).

- the judge rule scores the reply: `score=X` in the reply forces X; otherwise points for naming a
  next step, for courtesy, and for echoing a word of the user's message; feedback says what was
  missing;
- the reflection rule fixes the most frequent problem the judge's feedback names that the
  instruction does not yet address, one per call;
- the task rule follows the system prompt's instructions literally: it names a next step, thanks
  the customer, or answers their exact question only when told to.
With the judge rule this is a small world with a hidden optimum that GEPA can climb.

`LlmServer(world=...)` serves another world (tests/hard_world.py); faults on demand (`script`,
`fault_rate`) are the server's own, see sidecar/simulated/server.py.
"""

from __future__ import annotations

import re

from sidecar.simulated.server import LlmServer as SimulatedServer
from sidecar.simulated.server import serve_until_stopped
from sidecar.simulated.world import World, instruction_and_evidence

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
    prompt says that fix was already tried."""
    text, evidence = instruction_and_evidence(prompt)
    evidence = evidence.lower()
    pending = [
        (evidence.count(problem), fix)
        for problem, fix, marker in FIXES
        if problem in evidence and marker not in text.lower() and f"'{fix}'" not in prompt
    ]
    if not pending:
        return f"Change: said the same thing more briefly.\n```\n{text} Be brief.\n```"
    _, fix = max(pending, key=lambda item: item[0])
    return f"Change: added '{fix}' because the feedback asks for it.\n```\n{text} {fix}\n```"


class SimpleWorld:
    """Three fixes from the seed to a perfect score, a noise-free judge."""

    def task(self, system: str, user: str) -> str:
        return task_reply(system, user)

    def judge(self, user_message: str, reply: str) -> tuple[float, str]:
        return rule_score(user_message, reply)

    def reflect(self, prompt: str) -> str:
        return reflect(prompt)


class LlmServer(SimulatedServer):
    """The simulated server, on SimpleWorld unless told another world."""

    def __init__(
        self, latency_s: float = 0.0, seed: int = 7, world: World | None = None, port: int = 0
    ) -> None:
        super().__init__(world or SimpleWorld(), latency_s=latency_s, seed=seed, port=port)


def main() -> None:
    """`python -m tests.llm_server [--latency S] [--world hard --world-seed N]`: print the
    api_base, serve until SIGTERM (for benchmarks, which keep the server off the measured
    process's GIL)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--world", choices=("simple", "hard"), default="simple")
    parser.add_argument("--world-seed", type=int, default=0)
    args = parser.parse_args()
    world: World = SimpleWorld()
    if args.world == "hard":
        from tests.hard_world import HardWorld

        world = HardWorld(seed=args.world_seed)
    serve_until_stopped(LlmServer(latency_s=args.latency, world=world))


if __name__ == "__main__":
    main()
