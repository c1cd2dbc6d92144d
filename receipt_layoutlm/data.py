"""Receipts in memory and the sources that produce them.

Every source yields the same thing: a list of `Receipt`, each with its page size and its
words in reading order (text, box in page units with the origin top-left, OCR line id and
an optional raw label). Recipe steps (label merges, tagging, splits) live in recipe.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError


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


def load_receipts(spec: str, seed: int = 42) -> tuple[list[Receipt], LoadReport]:
    """Resolve a `--dataset` value: `FILE.jsonl`, `wildreceipt:FILE` or `demo[:N]`."""
    if spec == "demo" or spec.startswith("demo:"):
        from .demo import generate_receipts

        n_text = spec.partition(":")[2] or "300"
        if not n_text.isdigit() or int(n_text) < 1:
            raise UserError(f"--dataset {spec!r}: the demo size must be a positive integer, e.g. demo:300.")
        return generate_receipts(int(n_text), seed=seed), LoadReport(source=spec)
    if spec.startswith("wildreceipt:"):
        return read_wildreceipt(Path(spec.partition(":")[2]))
    return read_jsonl(Path(spec))


def _open_lines(path: Path):
    if not path.exists():
        raise UserError(f"Dataset file {path} does not exist; check the path given to --dataset.")
    if path.is_dir():
        raise UserError(f"Dataset path {path} is a directory; pass the .jsonl file inside it.")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); export the file as UTF-8.") from None


def _number(value, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: `{name}` must be a number, got {value!r}.")
    return float(value)


def read_jsonl(path: Path) -> tuple[list[Receipt], LoadReport]:
    """Read the portable format of shared/spec/dataset-format.md, strictly."""
    report = LoadReport(source=str(path))
    receipts: list[Receipt] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(_open_lines(path), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: bad JSON ({e.msg} at column {e.colno}); fix or remove that line.") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: each line must be a JSON object with id, width, height and words.")
        for key in ("id", "width", "height", "words"):
            if key not in obj:
                raise UserError(f"{where}: missing field `{key}`; every receipt needs id, width, height and words.")
        rid = obj["id"]
        if not isinstance(rid, str) or not rid:
            raise UserError(f"{where}: `id` must be a non-empty string.")
        if rid in seen:
            raise UserError(f"{where}: duplicate receipt id {rid!r}; ids must be unique in the file.")
        seen.add(rid)
        width, height = _number(obj["width"], where, "width"), _number(obj["height"], where, "height")
        if width <= 0 or height <= 0:
            raise UserError(f"{where}: width and height must be positive, got {width:g}x{height:g}.")
        if not isinstance(obj["words"], list):
            raise UserError(f"{where}: `words` must be a list.")
        words = []
        for k, w in enumerate(obj["words"]):
            wwhere = f"{where}: word {k}"
            if not isinstance(w, dict):
                raise UserError(f"{wwhere}: must be an object with text and box.")
            text = w.get("text")
            if not isinstance(text, str) or not text.strip():
                raise UserError(f"{wwhere}: empty or missing `text`.")
            box = w.get("box")
            if not isinstance(box, list) or len(box) != 4:
                raise UserError(f"{wwhere}: `box` must be [x0, y0, x1, y1].")
            x0, y0, x1, y1 = (_number(v, wwhere, "box") for v in box)
            if x1 < x0 or y1 < y0:
                raise UserError(f"{wwhere}: box {box} has x1<x0 or y1<y0; boxes are [x0, y0, x1, y1].")
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise UserError(f"{wwhere}: box {box} lies outside the {width:g}x{height:g} page.")
            line = w.get("line", -1)
            if isinstance(line, bool) or not isinstance(line, int):
                raise UserError(f"{wwhere}: `line` must be an integer.")
            label = w.get("label") or "O"
            if not isinstance(label, str):
                raise UserError(f"{wwhere}: `label` must be a string.")
            words.append(Word(text=text, box=(x0, y0, x1, y1), line=line, label=label))
        if not words:
            report.drop("receipt with no words")
            continue
        # Words without a line id each form their own line, so BIO never joins across them.
        if any(w.line == -1 for w in words):
            base = max(w.line for w in words) + 1
            words = [Word(w.text, w.box, base + i, w.label) if w.line == -1 else w for i, w in enumerate(words)]
        extra = {k: v for k, v in obj.items() if k not in ("id", "width", "height", "words")}
        receipts.append(Receipt(id=rid, width=width, height=height, words=words, extra=extra))
    return receipts, report


# WildReceipt class names -> receipt labels (shared/datasets/wildreceipt/README.md);
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
            raise UserError(f"{where}: not a WildReceipt record ({e}); expected file_name, width, height, annotations.") from None
        segments = []
        for ann in annotations:
            text = (ann.get("text") or "").strip()
            if not text:
                report.drop("empty text (unreadable segment)")
                continue
            xs, ys = ann["box"][0::2], ann["box"][1::2]
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


def write_jsonl(receipts: list[Receipt], path: Path) -> None:
    """Write receipts in the portable format (atomically)."""
    from .artifacts import atomic_write_text

    out = []
    for r in receipts:
        obj = {"id": r.id, "width": r.width, "height": r.height, **r.extra}
        obj["words"] = [
            {"text": w.text, "box": list(w.box), "line": w.line, **({"label": w.label} if w.label != "O" else {})}
            for w in r.words
        ]
        out.append(json.dumps(obj, ensure_ascii=False))
    atomic_write_text(path, "\n".join(out) + "\n")
