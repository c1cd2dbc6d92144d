"""CORD v1/v2 (`--dataset cord:DIR`): `DIR/json/*.json`, or `DIR/<split>/json/*.json` for
every split folder (train, dev, test) as the release unpacks.

Each file has `valid_line[]` (words with a 4-corner `quad`, `is_key`, `text`; a `category`
such as `menu.nm`) and `meta.image_size`. The words of one valid_line form one OCR line
(lines in reading order by their first word, see receipt.reading_order; words left to
right). Key words (`is_key` 1, e.g. "TOTAL") are O, except the keys of the payment lines
("CASH", "CREDIT CARD"), which name the payment method. Categories not in CATEGORY_LABELS
are O. Boxes are cut to the image size.
CORD is also distributed as Hugging Face parquet files whose `ground_truth` column holds this
same JSON as a string: write each row's ground_truth to json/<n>.json to read them here.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .receipt import LoadReport, Receipt, Word, clamp_to_page, page_size, reading_order

CATEGORY_LABELS = {
    "menu.nm": "PRODUCT_NAME",
    "menu.sub_nm": "PRODUCT_NAME",
    "menu.cnt": "QUANTITY",
    "menu.sub_cnt": "QUANTITY",
    "menu.unitprice": "UNIT_PRICE",
    "menu.sub_unitprice": "UNIT_PRICE",
    "menu.price": "LINE_TOTAL",
    "menu.sub_price": "LINE_TOTAL",
    "menu.discountprice": "DISCOUNT",
    "sub_total.subtotal_price": "SUBTOTAL",
    "sub_total.discount_price": "DISCOUNT",
    "sub_total.tax_price": "TAX",
    "total.total_price": "GRAND_TOTAL",
    "total.changeprice": "CHANGE",
    "store.nm": "MERCHANT_NAME",
    "store.addr": "ADDRESS_LINE",
    "store.tel": "PHONE_NUMBER",
}
# The key word of these lines ("CASH", "CREDIT CARD", "GOPAY") is the payment method; the amount is O.
PAYMENT_CATEGORIES = ("total.cashprice", "total.creditcardprice", "total.emoneyprice")


def _files(root: Path) -> list[tuple[str, Path]]:
    if (root / "json").is_dir():
        return [(p.stem, p) for p in sorted((root / "json").glob("*.json"))]
    return [(f"{p.parent.parent.name}/{p.stem}", p) for p in sorted(root.glob("*/json/*.json"))]


def word_label(category: str, is_key: bool) -> str:
    if is_key:
        return "PAYMENT_METHOD" if category in PAYMENT_CATEGORIES else "O"
    return CATEGORY_LABELS.get(category, "O")


def read_cord(root: Path) -> tuple[list[Receipt], LoadReport]:
    root = Path(root)
    files = _files(root)
    if not files:
        raise UserError(f"cord:{root}: no json/*.json files; pass CORD's folder holding json/ (or train/json/, ...).")
    report = LoadReport(source=f"cord:{root}")
    receipts = []
    for rid, path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            valid_lines = doc["valid_line"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a CORD annotation (bad JSON or no valid_line: {e}).") from None
        lines = []
        for vl in valid_lines:
            category = vl.get("category", "")
            words = []
            for w in vl.get("words", []):
                text = (w.get("text") or "").strip()
                if not text:
                    report.drop("cord word with empty text")
                    continue
                q = w.get("quad") or {}
                try:
                    xs = [float(q[f"x{i}"]) for i in range(1, 5)]
                    ys = [float(q[f"y{i}"]) for i in range(1, 5)]
                except (KeyError, TypeError, ValueError):
                    raise UserError(f"{path}: a word of category {category!r} has no x1..x4/y1..y4 quad.") from None
                box = (min(xs), min(ys), max(xs), max(ys))
                words.append((box, text, word_label(category, bool(w.get("is_key")))))
            if words:
                lines.append(sorted(words, key=lambda t: t[0][0]))
        if not lines:
            report.drop("receipt with no words")
            continue
        lines = [lines[i] for i in reading_order([ws[0][0] for ws in lines])]
        out = [Word(text, box, n, label) for n, ws in enumerate(lines) for box, text, label in ws]
        size = (doc.get("meta") or {}).get("image_size") or {}
        if size.get("width") and size.get("height"):
            width, height = float(size["width"]), float(size["height"])
        else:
            width, height = page_size(None, [w.box for w in out])
        receipts.append(Receipt(rid, width, height, clamp_to_page(out, width, height, report), {"source": "cord"}))
    return receipts, report
