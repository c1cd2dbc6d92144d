"""Receipts in memory: what every source produces.

Every source yields the same thing: a list of `Receipt`, each with its page size and its
words in reading order (text, box in page units with the origin top-left, OCR line id and
an optional raw label). Recipe steps (label merges, tagging, splits) live in training/recipe.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in page units, origin top-left
    line: int
    label: str = "O"


@dataclass
class Receipt:
    id: str
    width: float
    height: float
    words: list[Word]
    extra: dict = field(default_factory=dict)  # carried through, ignored by training


@dataclass
class LoadReport:
    """What a reader skipped and why, so nothing is dropped silently."""

    source: str
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
