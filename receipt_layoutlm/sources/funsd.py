"""FUNSD (`--dataset funsd:DIR`): `DIR/annotations/*.json`, or `DIR/*/annotations/*.json`
(training_data, testing_data as the release unpacks); `images/<id>.png` beside it optional.

Forms, not receipts: each `form[]` entity (label question/answer/header/other, its `words[]`
with `box` and `text`) becomes one OCR line labelled QUESTION, ANSWER or HEADER (the form
labels of labels.py), `other` becomes O. Entities are put in reading order by their first word
(receipt.reading_order). The page size is the image's when present, else the largest box extent.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .receipt import LoadReport, Receipt, Word, clamp_to_page, page_size, reading_order

FUNSD_LABELS = {"question": "QUESTION", "answer": "ANSWER", "header": "HEADER", "other": "O"}


def _files(root: Path) -> list[tuple[str, Path]]:
    if (root / "annotations").is_dir():
        return [(p.stem, p) for p in sorted((root / "annotations").glob("*.json"))]
    return [(f"{p.parent.parent.name}/{p.stem}", p) for p in sorted(root.glob("*/annotations/*.json"))]


def _box(value, where: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: `box` must be [x0, y0, x1, y1], got {value!r}.") from None
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def read_funsd(root: Path) -> tuple[list[Receipt], LoadReport]:
    root = Path(root)
    files = _files(root)
    if not files:
        raise UserError(f"funsd:{root}: no annotations/*.json files; pass FUNSD's folder holding annotations/.")
    report = LoadReport(source=f"funsd:{root}")
    receipts = []
    for rid, path in files:
        try:
            form = json.loads(path.read_text(encoding="utf-8"))["form"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a FUNSD annotation (bad JSON or no form: {e}).") from None
        entities = []
        for k, ent in enumerate(form):
            where = f"{path}: form[{k}]"
            label = FUNSD_LABELS.get(str(ent.get("label", "other")).lower())
            if label is None:
                raise UserError(
                    f"{where}: unknown FUNSD label {ent.get('label')!r}; expected {', '.join(FUNSD_LABELS)}."
                )
            words = []
            for w in ent.get("words", []):
                text = (w.get("text") or "").strip()
                if not text:
                    report.drop("funsd word with empty text")
                    continue
                words.append((_box(w.get("box"), where), text))
            if words:
                entities.append((label, words))
        if not entities:
            report.drop("receipt with no words")
            continue
        entities = [entities[i] for i in reading_order([ws[0][0] for _, ws in entities])]
        out = [Word(text, box, n, label) for n, (label, ws) in enumerate(entities) for box, text in ws]
        image = path.parent.parent / "images" / f"{path.stem}.png"
        width, height = page_size(image if image.is_file() else None, [w.box for w in out])
        receipts.append(Receipt(rid, width, height, clamp_to_page(out, width, height, report), {"source": "funsd"}))
    return receipts, report
