"""A side-by-side diff of two texts for the candidate page: rows of (left, right) sentences,
aligned, each marked kept, removed, added or changed; within a changed row the words that
differ are marked too. Split into sentences like `gepa-sidecar diff`, since a prompt is often
one long line."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

Kind = Literal["same", "removed", "added", "changed"]


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    marked: bool  # differs from the other side


@dataclass(frozen=True, slots=True)
class DiffRow:
    kind: Kind
    left: tuple[Piece, ...]  # empty: nothing on this side
    right: tuple[Piece, ...]


def sentences(text: str) -> list[str]:
    return text.replace(". ", ".\n").splitlines()


def side_by_side(before: str, after: str) -> list[DiffRow]:
    """The rows of `before` (left) against `after` (right)."""
    left, right = sentences(before), sentences(after)
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            rows.extend(DiffRow("same", _whole(a), _whole(a)) for a in left[i1:i2])
            continue
        removed, added = left[i1:i2], right[j1:j2]
        for index in range(max(len(removed), len(added))):
            a = removed[index] if index < len(removed) else None
            b = added[index] if index < len(added) else None
            if a is not None and b is not None:
                rows.append(DiffRow("changed", *_words(a, b)))
            elif a is not None:
                rows.append(DiffRow("removed", _whole(a, marked=True), ()))
            elif b is not None:
                rows.append(DiffRow("added", (), _whole(b, marked=True)))
    return rows


def _whole(text: str, marked: bool = False) -> tuple[Piece, ...]:
    return (Piece(text, marked),)


def _words(a: str, b: str) -> tuple[tuple[Piece, ...], tuple[Piece, ...]]:
    """Both sentences cut into runs of words, the runs that differ marked."""
    left_words, right_words = a.split(" "), b.split(" ")
    left: list[Piece] = []
    right: list[Piece] = []
    matcher = difflib.SequenceMatcher(a=left_words, b=right_words, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        marked = op != "equal"
        if i2 > i1:
            left.append(Piece(" ".join(left_words[i1:i2]), marked))
        if j2 > j1:
            right.append(Piece(" ".join(right_words[j1:j2]), marked))
    return tuple(left), tuple(right)
