"""SROIE 2019 task 3 (`--dataset sroie:DIR`): `DIR/box/<id>.txt|csv` OCR lines and
`DIR/key/<id>.json` key values; `DIR/img/<id>.jpg` optional.

A box line is `x1,y1,x2,y2,x3,y3,x4,y4,text` (four corners, then the text, which may hold
commas). Each OCR line becomes one line of words: split on whitespace, each word's box cut
from the line's box in proportion to its character offsets. Word labels come from the keys,
matched against the OCR lines after normalising whitespace and case:
  company -> MERCHANT_NAME, address -> ADDRESS_LINE: the run of 1-3 (company) or 1-6
    (address) consecutive lines most similar to the value (difflib ratio >= 0.8);
  date -> DATE, total -> GRAND_TOTAL: exact: the words whose text equals the value's words
    (or one word containing it, e.g. RM9.00). Totals repeat on receipts (cash, rounding), so
    only matches on or right after a line mentioning TOTAL are kept, else the last match.
A value that cannot be located is counted per field in the load report. The page size is
the image's when `img/` holds it, else the largest box extent.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from ..errors import UserError
from .receipt import LoadReport, Receipt, Word, clamp_to_page, page_size

FIELDS = {"company": "MERCHANT_NAME", "address": "ADDRESS_LINE", "date": "DATE", "total": "GRAND_TOTAL"}
FUZZY_LINES = {"company": 3, "address": 6}
MIN_RATIO = 0.8


def _norm(text: str) -> str:
    return " ".join(str(text).split()).upper()


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # a few SROIE files are not UTF-8


def parse_box_line(raw: str, where: str) -> tuple[tuple[float, float, float, float], str] | None:
    parts = raw.split(",", 8)
    if len(parts) < 9:
        if not raw.strip():
            return None
        raise UserError(f"{where}: expected 8 corner coordinates then the text, got {raw[:60]!r}.")
    try:
        xy = [float(v) for v in parts[:8]]
    except ValueError:
        raise UserError(f"{where}: the first 8 fields must be numbers, got {raw[:60]!r}.") from None
    xs, ys = xy[0::2], xy[1::2]
    return (min(xs), min(ys), max(xs), max(ys)), parts[8].strip()


def split_line(text: str, box, line: int) -> list[Word]:
    """Whitespace words with boxes apportioned by character offsets along the line's box."""
    x0, y0, x1, y1 = box
    per_char = (x1 - x0) / max(1, len(text))
    words, pos = [], 0
    for token in text.split():
        start = text.index(token, pos)
        pos = start + len(token)
        words.append(Word(token, (x0 + start * per_char, y0, x0 + pos * per_char, y1), line))
    return words


def _fuzzy_lines(line_texts: list[str], value: str, max_lines: int) -> list[int] | None:
    best, best_run = 0.0, None
    for start in range(len(line_texts)):
        for n in range(1, max_lines + 1):
            if start + n > len(line_texts):
                break
            ratio = difflib.SequenceMatcher(None, " ".join(line_texts[start : start + n]), value).ratio()
            if ratio > best:
                best, best_run = ratio, list(range(start, start + n))
    return best_run if best >= MIN_RATIO else None


def _exact_words(lines: list[list[Word]], value: str) -> list[tuple[int, list[int]]]:
    """(line, word positions) of each exact occurrence of value's words in a line."""
    target = value.split()
    found = []
    for li, words in enumerate(lines):
        texts = [w.text.upper() for w in words]
        for i in range(len(texts) - len(target) + 1):
            if texts[i : i + len(target)] == target:
                found.append((li, list(range(i, i + len(target)))))
        if len(target) == 1 and not any(li == f[0] for f in found):
            found.extend((li, [i]) for i, t in enumerate(texts) if target[0] in t and t != target[0])
    return found


def label_receipt(lines: list[list[Word]], keys: dict, report: LoadReport) -> list[list[str]]:
    labels = [["O"] * len(words) for words in lines]
    line_texts = [_norm(" ".join(w.text for w in words)) for words in lines]
    for field, label in FIELDS.items():
        value = _norm(keys.get(field) or "")
        if not value:
            continue
        if field in FUZZY_LINES:
            run = _fuzzy_lines(line_texts, value, FUZZY_LINES[field])
            hits = [(li, list(range(len(lines[li])))) for li in run] if run else []
        else:
            hits = _exact_words(lines, value)
            if field == "total" and len(hits) > 1:
                near = [h for h in hits if "TOTAL" in line_texts[h[0]] or (h[0] and "TOTAL" in line_texts[h[0] - 1])]
                hits = near or hits[-1:]
        if not hits:
            report.drop(f"sroie {field} value not found in the OCR lines")
        for li, positions in hits:
            for p in positions:
                labels[li][p] = label
    return labels


def read_sroie(root: Path) -> tuple[list[Receipt], LoadReport]:
    root = Path(root)
    box_dir, key_dir, img_dir = root / "box", root / "key", root / "img"
    if not box_dir.is_dir():
        raise UserError(f"sroie:{root}: no box/ folder; pass the folder holding SROIE's box/ and key/ folders.")
    report = LoadReport(source=f"sroie:{root}")
    files = sorted(p for p in box_dir.iterdir() if p.suffix.lower() in (".txt", ".csv"))
    if not files:
        raise UserError(f"sroie:{root}: box/ holds no .txt or .csv files.")
    receipts = []
    for path in files:
        lines: list[list[Word]] = []
        for n, raw in enumerate(_read_text(path).splitlines(), start=1):
            parsed = parse_box_line(raw, f"{path}:{n}")
            if parsed is None:
                continue
            box, text = parsed
            if not text.strip():
                report.drop("sroie line with empty text")
                continue
            lines.append(split_line(text, box, len(lines)))
        if not lines:
            report.drop("receipt with no words")
            continue
        key_file = key_dir / f"{path.stem}.json"
        keys = {}
        if key_file.is_file():
            try:
                keys = json.loads(_read_text(key_file))
            except ValueError as e:
                raise UserError(f"{key_file}: bad JSON ({e}); fix or remove the file.") from None
        else:
            report.drop("sroie receipt without key/*.json (words left O)")
        labels = label_receipt(lines, keys, report)
        words = [Word(w.text, w.box, w.line, lab) for ws, ls in zip(lines, labels) for w, lab in zip(ws, ls)]
        image = next((p for p in (img_dir / f"{path.stem}.jpg", img_dir / f"{path.stem}.png") if p.is_file()), None)
        width, height = page_size(image, [w.box for w in words])
        words = clamp_to_page(words, width, height, report)
        receipts.append(Receipt(path.stem, width, height, words, {"source": "sroie"}))
    return receipts, report
