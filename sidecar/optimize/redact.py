"""PII is redacted before traffic leaves the store for a model, and before a log line is
written: the reflection model needs the shape of a conversation (what was asked, what went
wrong), not who asked. Patterns are conservative: better to mask a number that was not a phone
than to send one that was."""

from __future__ import annotations

import re

_STREET_TYPES = (
    r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    r"terrace|loop|square|sq|gate|gardens|close|crescent|parkway|pkwy|highway|hwy|row|mews)"
)
_ROMANCE_TYPES = r"(?i:rue|avenue|av\.|boulevard|bd|place|chemin|all[ée]e|impasse|quai|cours)"
_PARTICLES = r"(?i:(?:de|du|des|la|le|les|del|las|los|dei|della|di)\s+|[dl]')*"
_ADDRESSES = (
    # 221B Baker Street, 350 Fifth Ave, Apt 5B / 1600 Pennsylvania Avenue NW
    rf"\b\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][\w'.-]*\s+){{1,4}}{_STREET_TYPES}\b\.?"
    r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
    r"(?:,?\s*(?i:apt|apartment|suite|unit|flat|#)\.?\s*\w+)?",
    # 12 rue de Rivoli, 8 avenue des Champs-Élysées
    rf"\b\d{{1,4}}(?:\s?(?i:bis|ter))?,?\s+{_ROMANCE_TYPES}\s+{_PARTICLES}"
    r"[\w'-]+(?:\s+[A-Z][\w'-]*)*",
    # Hauptstraße 5, Lindenweg 3, Keizersgracht 123
    r"\b[A-ZÄÖÜ][\w-]*(?i:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee|ring|damm|gracht|laan|"
    r"straat|plein|kade)\s+\d{1,4}\s?[a-zA-Z]?\b",
    # Calle Mayor 15, Via Roma 21
    r"\b(?:Calle|Avenida|Plaza|Paseo|Via|Viale|Piazza|Corso|Rua|Carrer)\s+"
    rf"{_PARTICLES}(?:[A-Z][\w'-]*\s+){{1,4}}\d{{1,4}}\b",
    r"\bP\.?\s?O\.?\s+Box\s+\d+\b",
    r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b",  # a UK postcode
)
_LOCATIONS = ("[url]", "[ip]")
"""What a log line keeps (an operator needs the endpoint that failed); traffic loses them too."""
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("[email]", re.compile(r"[\w.+%'-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("[url]", re.compile(r"\bhttps?://\S+", re.IGNORECASE)),
    (
        "[iban]",
        re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){3,7}(?:[ ]?[A-Za-z0-9]{1,3})?\b"),
    ),
    ("[card]", re.compile(r"\b(?:\d[ -]?){13,19}\b")),
    ("[ip]", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
    ("[address]", re.compile("|".join(f"(?:{pattern})" for pattern in _ADDRESSES))),
)
_PHONE = re.compile(r"(?<![\w])\+?\d[\d ()./-]{7,}\d\b")
_PHONE_MIN_DIGITS = 9  # fewer is more likely a date or an order number


def _phone(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group(0))
    return "[phone]" if digits >= _PHONE_MIN_DIGITS else match.group(0)


def redact(text: str, locations: bool = True) -> str:
    """`text` with emails, IBANs, card numbers, street addresses and phone numbers masked, and
    URLs and IP addresses too unless `locations` is False."""
    for placeholder, pattern in _PATTERNS:
        if locations or placeholder not in _LOCATIONS:
            text = pattern.sub(placeholder, text)
    return _PHONE.sub(_phone, text)
