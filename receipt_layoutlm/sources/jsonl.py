"""Our portable JSONL receipt format (docs/dataset-format.md): strict reader and atomic writer."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UserError
from .receipt import LoadReport, Receipt, Word


def _open_lines(path: Path):
    if not path.exists():
        raise UserError(f"Dataset file {path} does not exist; check the path given to --dataset.")
    if path.is_dir():
        raise UserError(f"Dataset path {path} is a directory; pass the .jsonl file inside it.")
    return _decode_lines(path.read_bytes(), str(path))


def _decode_lines(body: bytes, source: str) -> list[str]:
    try:
        return body.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start}); export the file as UTF-8.") from None


def _number(value, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: `{name}` must be a number, got {value!r}.")
    if not math.isfinite(value):  # json.loads accepts NaN and Infinity
        raise UserError(f"{where}: `{name}` must be a finite number, got {value!r}.")
    return float(value)


def receipt_from_dict(obj, where: str) -> Receipt:
    """One receipt object of the format, checked strictly; `where` starts every error message."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: each line must be a JSON object with id, width, height and words.")
    for key in ("id", "width", "height", "words"):
        if key not in obj:
            raise UserError(f"{where}: missing field `{key}`; every receipt needs id, width, height and words.")
    rid = obj["id"]
    if not isinstance(rid, str) or not rid:
        raise UserError(f"{where}: `id` must be a non-empty string.")
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
        if box is None:
            raise UserError(f"{wwhere}: missing `box`; every word needs its [x0, y0, x1, y1] on the page.")
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
    # Words without a line id each form their own line, so BIO never joins across them.
    if any(w.line == -1 for w in words):
        base = max(w.line for w in words) + 1
        words = [Word(w.text, w.box, base + i, w.label) if w.line == -1 else w for i, w in enumerate(words)]
    extra = {k: v for k, v in obj.items() if k not in ("id", "width", "height", "words")}
    return Receipt(id=rid, width=width, height=height, words=words, extra=extra)


def read_jsonl(path: Path) -> tuple[list[Receipt], LoadReport]:
    """Read the portable format of docs/dataset-format.md, strictly."""
    return parse_jsonl(_open_lines(path), str(path))


def parse_jsonl(lines: list[str], source: str) -> tuple[list[Receipt], LoadReport]:
    """The receipts of the format's lines; `source` (a path or URI) starts every error message."""
    report = LoadReport(source=source)
    receipts: list[Receipt] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: bad JSON ({e.msg} at column {e.colno}); fix or remove that line.") from None
        receipt = receipt_from_dict(obj, where)
        if receipt.id in seen:
            raise UserError(f"{where}: duplicate receipt id {receipt.id!r}; ids must be unique in the file.")
        seen.add(receipt.id)
        if not receipt.words:
            report.drop("receipt with no words")
            continue
        receipts.append(receipt)
    return receipts, report


def read_jsonl_s3(uri: str, aws=None) -> tuple[list[Receipt], LoadReport]:
    """The portable format from s3://bucket/key (a sweep's data snapshot, for workers on other machines)."""
    from ..s3 import read_object

    return parse_jsonl(_decode_lines(read_object(uri, "--dataset", aws), uri), uri)


def write_jsonl(receipts: list[Receipt], path: Path) -> None:
    """Write receipts in the portable format (atomically)."""
    from ..training.artifacts import atomic_write_text

    atomic_write_text(path, jsonl_text(receipts))


def jsonl_text(receipts: list[Receipt]) -> str:
    """Receipts in the portable format, one line each."""
    out = []
    for r in receipts:
        obj = {"id": r.id, "width": r.width, "height": r.height, **r.extra}
        obj["words"] = [
            {"text": w.text, "box": list(w.box), "line": w.line, **({"label": w.label} if w.label != "O" else {})}
            for w in r.words
        ]
        out.append(json.dumps(obj, ensure_ascii=False))
    return "\n".join(out) + "\n"
