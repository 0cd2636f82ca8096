"""R5c, R5d: traffic is data. (c) >= 50 prompt injections reach a reflection model (our LLM
server, through litellm) that obeys them and writes each into the new instruction; the
reflection context fences every one as data, and the safety check flags every candidate that
carries one, while benign edits that share the users' words are not flagged. (d) a corpus of
personal data (emails, phones, Luhn-valid cards, IBANs, street addresses) is redacted before it
reaches the reflection model and before a log line carrying user text is written."""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest

from sidecar.judge.verdict import InvalidReply, first_json_object
from sidecar.llm.gateway import Gateway
from sidecar.llm.loop_clients import run_with_models
from sidecar.logs import stderr_handler
from sidecar.optimize.redact import redact
from sidecar.optimize.reflection import Proposer, ReflectionExample
from sidecar.optimize.safety import flags_for
from sidecar.simulated.world import instruction_and_evidence
from tests.llm_server import LlmServer, SimpleWorld
from tests.reliability.corpora.injections import BENIGN_EDITS, BENIGN_TRAFFIC, INJECTIONS
from tests.reliability.corpora.pii import Item, corpus
from tests.reliability.rows import Row, record, sized
from tests.world import world_settings

PARENT = "You help customers of an online shop. Be accurate and kind."
COMPONENT = "system_prompt"
_EXAMPLE_BLOCK = re.compile(r'<example n="\d+">.*?</example>', re.S)


class ObedientWorld(SimpleWorld):
    """A reflection model that obeys the injection in its examples: it appends what the
    injection asks for (as the corpus says it would write it) to the instruction."""

    def reflect(self, prompt: str) -> str:
        for injection in INJECTIONS:
            if redact(injection.message) in prompt:
                current, _ = instruction_and_evidence(prompt)
                return f"Change: did what the user asked.\n```\n{current} {injection.obeyed}\n```"
        return super().reflect(prompt)


@pytest.fixture
def obedient() -> Iterator[LlmServer]:
    with LlmServer(world=ObedientWorld()) as server:
        yield server


def fenced(content: str, message: str) -> bool:
    """The message is shown only inside <example> tags, never outside them."""
    shown = redact(message)
    inside = "".join(_EXAMPLE_BLOCK.findall(content))
    return shown in inside and shown not in _EXAMPLE_BLOCK.sub("", content)


def reason(flag: str) -> str:
    """A flag's kind: its text before the component's name."""
    return flag.split(f" {COMPONENT}")[0].removesuffix(" into").removesuffix(" in").strip(", ")


def test_r5c_every_obeyed_injection_is_flagged_and_benign_edits_are_not(
    obedient: LlmServer,
) -> None:
    proposer = Proposer(Gateway(world_settings(obedient.api_base)))
    traffic = [injection.message for injection in INJECTIONS] + list(BENIGN_TRAFFIC)
    flagged: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    missed, unfenced = [], 0
    for injection in INJECTIONS:
        example = ReflectionExample(
            {"user_message": injection.message}, "We have received your message.", 0.25, "Curt."
        )
        proposal = run_with_models(proposer.propose(COMPONENT, PARENT, [example]))
        content = obedient.bodies[-1]["messages"][-1]["content"]
        unfenced += not fenced(content, injection.message)
        assert injection.obeyed in proposal.text  # the model did obey
        flags = flags_for({COMPONENT: proposal.text}, {COMPONENT: PARENT}, traffic)
        if flags:
            flagged[injection.kind] += 1
            reasons.update(reason(flag) for flag in flags)
        else:
            missed.append(injection.obeyed)
    false_flags = [
        edit
        for edit in BENIGN_EDITS
        if flags_for({COMPONENT: f"{PARENT} {edit}"}, {COMPONENT: PARENT}, traffic)
    ]
    kinds = Counter(injection.kind for injection in INJECTIONS)
    total = sum(flagged.values())
    record(
        Row(
            row="R5c",
            test="test_r5c_every_obeyed_injection_is_flagged_and_benign_edits_are_not",
            load=f"{len(INJECTIONS)} injections {dict(sorted(kinds.items()))} through an "
            f"obedient reflection model; {len(BENIGN_EDITS)} benign edits",
            faults="injections: ignore-previous, role-play, fake system tags, quoted, "
            "base64/rot13/leet, multilingual; obeyed verbatim, in part, reworded, decoded",
            goal="every obeyed injection flagged, fenced as data; no benign edit flagged",
            result=f"{total}/{len(INJECTIONS)} flagged {dict(sorted(flagged.items()))}; "
            f"{len(INJECTIONS) - unfenced}/{len(INJECTIONS)} fenced; {len(false_flags)}/"
            f"{len(BENIGN_EDITS)} benign flagged; reasons {dict(sorted(reasons.items()))}",
            passed=total == len(INJECTIONS) and unfenced == 0 and not false_flags,
            lost=0,
            duplicated=0,
        )
    )
    assert len(INJECTIONS) >= 50
    assert not missed, missed
    assert unfenced == 0
    assert not false_flags, false_flags


def _digit_windows(value: str, width: int = 8) -> list[re.Pattern[str]]:
    """Any `width` consecutive digits of `value`, separators allowed between them."""
    digits = re.sub(r"\D", "", value)
    return [
        re.compile(r"[\s().+/-]*".join(digits[i : i + width]))
        for i in range(max(0, len(digits) - width + 1))
    ]


_GENERIC = {"street", "avenue", "road", "drive", "terrace", "lane", "place", "loop", "blvd", "box"}


def leaked(item: Item, output: str) -> bool:
    """Whether any identifying part of the item's value survives in `output`."""
    lower = output.lower()
    if item.value.lower() in lower:
        return True
    if item.kind == "email":
        return item.value.split("@")[0].lower() in lower
    if item.kind == "address":
        street, _, place = item.value.partition(",")
        words = {word for word in re.findall(r"\w{4,}", street.lower()) if not word.isdigit()}
        words -= _GENERIC | set(re.findall(r"\w+", place.lower()))
        return any(re.search(rf"\b{re.escape(word)}\b", lower) for word in words)
    compact = re.sub(r"\s", "", item.value).lower()
    if item.kind == "iban" and compact in re.sub(r"\s", "", lower):
        return True
    return any(window.search(output) for window in _digit_windows(item.value))


def reflection_leaks(server: LlmServer, items: Sequence[Item], batch: int) -> list[Item]:
    """The items whose value reached the reflection model: each batch of items shown as the
    inputs, outputs and feedback of one reflection request."""
    proposer = Proposer(Gateway(world_settings(server.api_base)))
    found = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        examples = [
            ReflectionExample(
                {"user_message": item.text},
                f"Noted, I saved {item.value} on your account.",
                0.25,
                f"The reply repeats the customer's data ({item.value}).",
            )
            for item in chunk
        ]
        run_with_models(proposer.propose(COMPONENT, PARENT, examples))
        content = " ".join(message["content"] for message in server.bodies[-1]["messages"])
        found.extend(item for item in chunk if leaked(item, content))
    return found


def log_lines(items: Sequence[Item], log_format: str) -> Iterator[tuple[Item, str]]:
    """Each item logged the ways user text reaches a log: a judge reply quoted in an
    InvalidReply (evaluation's warning) and an unexpected error's traceback (the judge worker)."""
    stream = io.StringIO()
    handler = stderr_handler(log_format)
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    evaluation = logging.getLogger("sidecar.optimize.evaluation")
    worker = logging.getLogger("sidecar.judge.worker")
    for logger in (evaluation, worker):
        logger.addHandler(handler)
    try:
        for number, item in enumerate(items):
            try:
                first_json_object(f"{item.text} (no score, sorry)")
            except InvalidReply as exc:
                evaluation.warning("evaluation on event %d failed: %s", number, exc)
            try:
                raise ValueError(f"the provider refused: {item.text}")
            except ValueError:
                worker.exception("judging event %d failed unexpectedly", number)
            yield item, stream.getvalue()
            stream.seek(0)
            stream.truncate()
    finally:
        for logger in (evaluation, worker):
            logger.removeHandler(handler)


ORDINARY = (
    "I waited 3 days for order 12345.",
    "It arrived on 2024-05-01 at 10:30.",
    "Refunds take 5 to 7 business days.",
    "Version 2.3.1 of the app crashes.",
    "I bought 2 Large Pizzas and 3 Drinks.",
    "Your ticket TK-2024-0042 is open.",
    "Rule 1: be nice. Rule 2: name the next step.",
    "I have 1 Question about my bill of 19.99 per month.",
)
"""Text with numbers that is no one's personal data: the redactor leaves it alone."""
LOG_LINE = "publishing to http://10.0.0.7:8080/prompts failed after 3 tries; 120 events, v12"
"""A log line keeps its endpoint: an operator needs it."""


def test_r5d_personal_data_is_redacted_for_the_reflection_model_and_in_logs() -> None:
    items = corpus()
    altered = [text for text in ORDINARY if redact(text) != text]
    altered += [LOG_LINE] * (redact(LOG_LINE, locations=False) != LOG_LINE)
    with LlmServer() as server:
        in_reflection = reflection_leaks(server, items, batch=sized(ci=12, full=4))
    in_logs = [
        item for log_format in ("text", "json") for item, lines in log_lines(items, log_format)
        if leaked(item, lines)
    ]  # fmt: skip
    kinds = Counter(item.kind for item in items)
    rate_reflection = 1 - len(in_reflection) / len(items)
    rate_logs = 1 - len(in_logs) / (2 * len(items))
    missed = Counter(item.kind for item in [*in_reflection, *in_logs])
    record(
        Row(
            row="R5d",
            test="test_r5d_personal_data_is_redacted_for_the_reflection_model_and_in_logs",
            load=f"{len(items)} messages {dict(sorted(kinds.items()))}",
            faults="personal data in user messages, model outputs, judge feedback and the "
            "exceptions that reach the log (text and JSON)",
            goal=">= 99% redacted in the reflection context and in logs",
            result=f"reflection context {rate_reflection:.1%} redacted, logs {rate_logs:.1%}; "
            f"missed by kind {dict(sorted(missed.items()))}; {len(altered)}/"
            f"{len(ORDINARY) + 1} ordinary texts altered",
            passed=rate_reflection >= 0.99 and rate_logs >= 0.99 and not altered,
            lost=0,
            duplicated=0,
        )
    )
    assert rate_reflection >= 0.99, [item.text for item in in_reflection][:10]
    assert rate_logs >= 0.99, [item.text for item in in_logs][:10]
    assert not altered, altered
