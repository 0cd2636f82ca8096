"""R5d's corpus: personal data as users type it into a chat, each value in a sentence. Every
value must be gone (masked) from what leaves the store for a model and from the logs."""

from __future__ import annotations

from dataclasses import dataclass


def luhn(prefix: str, length: int) -> str:
    """`prefix` padded with a fixed filler to `length` digits, the last one its Luhn check."""
    body = (prefix + "7390218465" * 2)[: length - 1]
    total = 0
    for i, char in enumerate(reversed(body)):
        digit = int(char) * (2 if i % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return body + str((10 - total % 10) % 10)


def grouped(digits: str, sizes: tuple[int, ...], separator: str) -> str:
    parts, start = [], 0
    for size in sizes:
        parts.append(digits[start : start + size])
        start += size
    return separator.join(parts)


EMAILS = (
    "john.doe@example.com",
    "Jane_Smith+orders@mail.example.co.uk",
    "a.b-c@sub.domain.io",
    "MARIE.DUPONT@ORANGE.FR",
    "k9@x.org",
    "first.last.2024@company-name.com",
    "o'brien@example.ie",
    "user%tag@example.net",
    "müller@beispiel.de",
    "li.wei@qq.com",
    "support-request@shop.example",
    "x_y.z@uni.edu.au",
)

PHONES = (
    "+1 (415) 555-0132",
    "415-555-0132",
    "(415) 555-0132",
    "415.555.0132",
    "4155550132",
    "+14155550132",
    "1-800-555-0199",
    "+44 20 7946 0958",
    "020 7946 0958",
    "07700 900123",
    "+44 7700 900123",
    "+33 1 42 68 53 00",
    "06 12 34 56 78",
    "+33612345678",
    "+49 30 901820",
    "0151 23456789",
    "+49 (0)151 234 56789",
    "+91 98765 43210",
    "+61 2 9374 4000",
    "+81 3-1234-5678",
    "+34 612 34 56 78",
    "+39 06 6982 1234",
)

_CARDS = (
    ("4", 16, (4, 4, 4, 4)),  # Visa
    ("51", 16, (4, 4, 4, 4)),  # Mastercard
    ("2221", 16, (4, 4, 4, 4)),  # Mastercard 2-series
    ("37", 15, (4, 6, 5)),  # Amex
    ("6011", 16, (4, 4, 4, 4)),  # Discover
    ("36", 14, (4, 6, 4)),  # Diners
    ("35", 16, (4, 4, 4, 4)),  # JCB
    ("4", 13, (4, 4, 5)),  # old Visa
    ("62", 19, (4, 4, 4, 4, 3)),  # UnionPay
)
CARDS = tuple(
    grouped(luhn(prefix, length), sizes, separator)
    for prefix, length, sizes in _CARDS
    for separator in (" ", "-", "")
)

IBANS = (
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "GB29 NWBK 6016 1331 9268 19",
    "GB29NWBK60161331926819",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "CH93 0076 2011 6238 5295 7",
    "BE68 5390 0754 7034",
    "AT61 1904 3002 3457 3201",
    "PL61 1090 1014 0000 0712 1981 2874",
    "de89 3704 0044 0532 0130 00",
    "IE29 AIBK 9311 5212 3456 78",
)

ADDRESSES = (
    "221B Baker Street, London NW1 6XE",
    "1600 Pennsylvania Avenue NW, Washington, DC 20500",
    "10 Downing St",
    "742 Evergreen Terrace, Springfield",
    "350 Fifth Ave, Apt 5B, New York, NY 10118",
    "1 Infinite Loop, Cupertino, CA 95014",
    "55 Oak Road",
    "12 Elm Drive",
    "9 Queen's Gate Place",
    "4 Privet Drive, Little Whinging",
    "77 Sunset Blvd, Los Angeles",
    "31 Maple Lane",
    "Hauptstraße 5, 10115 Berlin",
    "Musterstrasse 12a",
    "Lindenweg 3, 80331 München",
    "12 rue de Rivoli, 75001 Paris",
    "8 avenue des Champs-Élysées",
    "Calle Mayor 15, 28013 Madrid",
    "Via Roma 21, 00184 Roma",
    "Keizersgracht 123, 1015 CJ Amsterdam",
    "P.O. Box 1234",
    "PO Box 77, Springfield",
)

SENTENCES = (
    "Hi, you can reach me at {}.",
    "{}",
    "My details: {} (please keep them private)",
    "please update it to {} thanks",
    "I already wrote twice!!! {}. Why no answer?",
)


@dataclass(frozen=True)
class Item:
    kind: str
    value: str
    text: str


def corpus() -> list[Item]:
    """Every value in every sentence: one item per (value, sentence)."""
    kinds = {
        "email": EMAILS,
        "phone": PHONES,
        "card": CARDS,
        "iban": IBANS,
        "address": ADDRESSES,
    }
    return [
        Item(kind, value, sentence.format(value))
        for kind, values in kinds.items()
        for value in values
        for sentence in SENTENCES
    ]
