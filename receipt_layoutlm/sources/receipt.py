"""Receipts in memory: what every source produces.

Every source yields the same thing: a list of `Receipt`, each with its page size and its
words in reading order (text, box in page units with the origin top-left, OCR line id and
an optional raw label). Recipe steps (label merges, tagging, splits) live in training/recipe.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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


def page_size(image: Path | None, boxes) -> tuple[float, float]:
    """The image's size when there is one (header only read), else the largest box extent."""
    if image is not None:
        from PIL import Image

        with Image.open(image) as im:
            return float(im.width), float(im.height)
    return max([1.0] + [b[2] for b in boxes]), max([1.0] + [b[3] for b in boxes])


def clamp_to_page(words: list[Word], width: float, height: float, report: LoadReport) -> list[Word]:
    """Boxes cut to the page (scanned datasets have a few corners just outside it); counted."""
    out = []
    for w in words:
        x0, y0, x1, y1 = w.box
        box = (min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width), min(max(y1, 0), height))
        if box != w.box:
            report.drop("box cut to the page")
            w = Word(w.text, box, w.line, w.label)
        out.append(w)
    return out


def reading_order(boxes: list[tuple]) -> list[int]:
    """Indices of boxes top to bottom, then left to right within a visual row: a box joins the
    current row when its vertical centre lies inside the row's first box's vertical extent
    (the rule WildReceipt segments are grouped by)."""
    order = sorted(range(len(boxes)), key=lambda i: ((boxes[i][1] + boxes[i][3]) / 2, boxes[i][0]))
    rows: list[list[int]] = []
    for i in order:
        cy = (boxes[i][1] + boxes[i][3]) / 2
        if rows and boxes[rows[-1][0]][1] <= cy <= boxes[rows[-1][0]][3]:
            rows[-1].append(i)
        else:
            rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda i: boxes[i][0])]
