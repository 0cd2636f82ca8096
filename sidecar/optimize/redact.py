"""PII is redacted before traffic leaves the store for a model: the reflection model needs the
shape of a conversation (what was asked, what went wrong), not who asked. Patterns are
conservative: better to mask a number that was not a phone than to send one that was."""

from __future__ import annotations

import re

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("[email]", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("[url]", re.compile(r"\bhttps?://\S+", re.IGNORECASE)),
    ("[iban]", re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){3,7}(?:[ ]?[A-Z0-9]{1,3})?\b")),
    ("[card]", re.compile(r"\b(?:\d[ -]?){13,19}\b")),
    ("[ip]", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
)
_PHONE = re.compile(r"(?<![\w])\+?\d[\d ()./-]{7,}\d\b")
_PHONE_MIN_DIGITS = 9  # fewer is more likely a date or an order number


def _phone(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group(0))
    return "[phone]" if digits >= _PHONE_MIN_DIGITS else match.group(0)


def redact(text: str) -> str:
    """`text` with emails, URLs, IBANs, card numbers, IP addresses and phone numbers masked."""
    for placeholder, pattern in _PATTERNS:
        text = pattern.sub(placeholder, text)
    return _PHONE.sub(_phone, text)
