"""MMOCR's WildReceipt KIE format (`wildreceipt:FILE`, class_list.txt beside it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UserError
from .jsonl import _open_lines
from .receipt import LoadReport, Receipt, Word

# WildReceipt class names -> receipt labels (docs/dataset-format.md, "WildReceipt");
# every *_key caption, Others and Ignore become O.
WILDRECEIPT_LABELS = {
    "Store_name_value": "MERCHANT_NAME",
    "Store_addr_value": "ADDRESS_LINE",
    "Tel_value": "PHONE_NUMBER",
    "Date_value": "DATE",
    "Time_value": "TIME",
    "Prod_item_value": "PRODUCT_NAME",
    "Prod_quantity_value": "QUANTITY",
    "Prod_price_value": "LINE_TOTAL",
    "Subtotal_value": "SUBTOTAL",
    "Tax_value": "TAX",
    "Tips_value": "TIP",
    "Total_value": "GRAND_TOTAL",
}


def read_wildreceipt(path: Path) -> tuple[list[Receipt], LoadReport]:
    """Read MMOCR's WildReceipt KIE format; class names come from class_list.txt beside it."""
    report = LoadReport(source=f"wildreceipt:{path}")
    lines = _open_lines(path)
    class_file = path.parent / "class_list.txt"
    if not class_file.exists():
        raise UserError(f"{class_file} not found; WildReceipt needs class_list.txt beside {path.name}.")
    classes = [c.strip() for c in class_file.read_text(encoding="utf-8").splitlines() if c.strip()]
    receipts = []
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(raw)
            width, height = float(obj["width"]), float(obj["height"])
            annotations = obj["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{where}: not a WildReceipt record ({e}); expected file_name, width, height, annotations."
            ) from None
        segments = []
        for k, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise UserError(f"{where}: annotation {k} is not an object with box, text and label.")
            text = (ann.get("text") or "").strip()
            if not text:
                report.drop("empty text (unreadable segment)")
                continue
            box = ann.get("box")
            if not (isinstance(box, list) and len(box) == 8 and all(_is_number(v) for v in box)):
                raise UserError(
                    f"{where}: annotation {k} ({text!r}) needs a `box` of 8 numbers (4 corners x, y), got {box!r}."
                )
            if not _is_number(ann.get("label")):
                raise UserError(
                    f"{where}: annotation {k} ({text!r}) needs a numeric `label`, got {ann.get('label')!r}."
                )
            xs, ys = box[0::2], box[1::2]
            # Clamp to the page: a few annotated corners stick out by a pixel or two.
            x0, x1 = max(0.0, min(xs)), min(width, max(xs))
            y0, y1 = max(0.0, min(ys)), min(height, max(ys))
            label_id = int(ann["label"])
            if not 0 <= label_id < len(classes):
                raise UserError(f"{where}: label id {label_id} is not in {class_file} ({len(classes)} classes).")
            segments.append((text, (x0, y0, x1, y1), WILDRECEIPT_LABELS.get(classes[label_id], "O")))
        if not segments:
            report.drop("receipt with no readable segment")
            continue
        receipts.append(
            Receipt(
                id=obj.get("file_name") or f"{path.name}:{lineno}",
                width=width,
                height=height,
                words=group_into_lines(segments),
            )
        )
    return receipts, report


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def group_into_lines(segments: list[tuple[str, tuple, str]]) -> list[Word]:
    """Order boxes top-to-bottom, left-to-right and give boxes on one visual row a line id.

    A box joins the current row when its vertical centre lies inside the row's first box's
    vertical extent; rows are then read left to right. Used for sources without OCR lines.
    """
    items = sorted(segments, key=lambda s: ((s[1][1] + s[1][3]) / 2, s[1][0]))
    rows: list[list] = []
    for seg in items:
        cy = (seg[1][1] + seg[1][3]) / 2
        if rows:
            top, bottom = rows[-1][0][1][1], rows[-1][0][1][3]
            if top <= cy <= bottom:
                rows[-1].append(seg)
                continue
        rows.append([seg])
    words = []
    for line_id, row in enumerate(rows):
        for text, box, label in sorted(row, key=lambda s: s[1][0]):
            words.append(Word(text=text, box=box, line=line_id, label=label))
    return words
