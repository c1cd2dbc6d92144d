"""Receipts from and into the users' DynamoDB receipts table (its items: README.md, "Your DynamoDB table and S3").

Loading: one GSI3 query per label status (`VALIDATION_STATUS#VALID`, all pages, read as 16
sort-key ranges at once) names the labelled words and so the receipts to use; each receipt
is fetched on a thread pool as soon as the label query names it: one GSI4 query (`IMAGE#<iid>#RECEIPT#<r>`, sort keys
`0_RECEIPT`..`3_WORD#...`, lines filtered out by the server) returns its Receipt item (width,
height) and its words. Items written without GSI4 keys are still found the spec's other way
(GetItem for the Receipt, GSI3 `IMAGE#<iid>#RECEIPT#<r>` / `WORD` for the words) when the GSI4
query returns no Receipt item or no words. Every query asks only for the attributes read
(ProjectionExpression), and items are read straight from the JSON body: a client's CPU per
item, not the round trips, limited the loading before (docs/benchmarks.md).

- Receipt id: `<image uuid>#<receipt number, 5 digits>`, e.g.
  `3f2a0c1e-...-9b1d#00001` (the style of the dataset format's example).
- Boxes: a word's corners are 0-1 relative to the receipt crop with the origin at the
  bottom-left and y up; the box is the min/max of the four corners, converted to page
  units of the crop with the origin top-left: x = cx * width, y = (1 - cy) * height
  (clamped to the page, as OCR corners can stick out by a hair; rounded to 1e-4).
- Reading order: lines by their line id, which the OCR assigns top-to-bottom; words
  within a line by their left x (then word id). `line` is the line id.
- Labels: names are upper-cased and old aliases mapped (ADDRESS -> ADDRESS_LINE, ...).
  A word without a label of the wanted status(es) is `O`. A word with several distinct
  labels keeps the one that comes first in the spec's canonical label order
  (MERCHANT_NAME, STORE_HOURS, ... REFUND; names outside that list come after it,
  alphabetically) -- the most specific field first, where the users' older tool took the
  alphabetically first -- and each such word is counted in the LoadReport as
  "word with several VALID labels: kept X over Y". Labels whose word does not exist, and
  receipts without a Receipt item or without words, are counted too.

Importing writes Receipt, ReceiptLine, ReceiptWord and ReceiptWordLabel (VALID) items with
every key and attribute the spec lists, so that `import` then `export` gives the same
words, lines, labels and (within float rounding) boxes. The image id is a UUID4 derived
from the source receipt id, so importing the same file again overwrites the same items;
the source id is kept in the Receipt's `raw_s3_key` (imported receipts have no raw image).
A re-import does not delete label items of labels since removed from the source file.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from ..aws import AwsSettings
from ..errors import UserError
from ..labels import CANONICAL_LABELS, normalise_label
from ..store import now_iso
from ..store.dynamodb import DynamoTable
from ..store.wire import from_wire, item_from_wire
from .receipt import LoadReport, Receipt, Word

RECEIPT_NUMBER = 1  # imported receipts: one receipt per (derived) image
LABEL_PRIORITY = {name: i for i, name in enumerate(CANONICAL_LABELS)}


def canonical_label(name: str) -> str:
    """Alias-mapped, upper-case label name; names outside the vocabulary are kept (upper-cased)."""
    try:
        return normalise_label(name)
    except UserError:
        return name.strip().upper()


def pick_label(labels: set[str]) -> str:
    """The deterministic choice among several labels of one word: canonical order, then alphabetical."""
    return min(labels, key=lambda name: (LABEL_PRIORITY.get(name, len(LABEL_PRIORITY)), name))


def image_id_for(receipt_id: str) -> str:
    """A UUID4-shaped image id derived from a receipt id, so re-imports hit the same items."""
    return str(uuid.UUID(bytes=hashlib.md5(receipt_id.encode("utf-8")).digest(), version=4))


def receipt_key(image_id: str, receipt_number: int) -> str:
    """The receipt id used in datasets loaded from DynamoDB: `<iid>#<r>`."""
    return f"{image_id}#{receipt_number:05d}"


# --- loading --------------------------------------------------------------------------


def _parse_sk(sk: str) -> dict[str, str]:
    """'RECEIPT#00001#LINE#00002#WORD#00003#LABEL#DATE' -> {'RECEIPT': '00001', 'LINE': ..., 'LABEL': 'DATE'}"""
    parts = sk.split("#")
    return dict(zip(parts[0::2], parts[1::2], strict=False))


def load_dynamo_receipts(
    table_name: str,
    aws: AwsSettings | None = None,
    statuses=("VALID",),
    max_workers: int = 8,
) -> tuple[list[Receipt], LoadReport]:
    """Training receipts from the receipts table; see the module docstring for the rules."""
    table = DynamoTable(table_name, aws)  # its own client: the parse hook below touches no other table
    table.client.meta.events.register("before-parse.dynamodb.Query", _items_as_sent)
    statuses = tuple(s.strip().upper() for s in statuses)
    report = LoadReport(source=f"{table.description} ({'/'.join(statuses)} labels)")
    labels: dict[tuple[str, int], dict[tuple[int, int], set[str]]] = {}  # (iid, r) -> (line, word) -> names
    fetches: dict[tuple[str, int], Future] = {}
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        try:
            segments = [pool.submit(_labels, table, status, lo, hi) for status in statuses for lo, hi in LABEL_RANGES]
            # A receipt is fetched as soon as a part of the label query names it, while other parts still run.
            for segment in as_completed(segments):
                for receipt, word, name in segment.result():
                    if receipt not in labels:
                        labels[receipt] = {}
                        fetches[receipt] = pool.submit(_fetch_receipt, table, *receipt)
                    labels[receipt].setdefault(word, set()).add(name)
            results = [_build_receipt(key, fetches[key].result(), labels[key], statuses, table) for key in labels]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # stop fetching, e.g. on an error or Ctrl-C
            raise
    receipts = []
    for receipt, drops in results:
        for reason, n in drops.items():
            report.drop(reason, n)
        if receipt is not None:
            receipts.append(receipt)
    if not receipts:
        raise UserError(
            f"No receipts with {'/'.join(statuses)} word labels found in DynamoDB table {table_name} "
            f"(GSI3 VALIDATION_STATUS#{', VALIDATION_STATUS#'.join(statuses)}); label some words first "
            "or choose other --label-status values."
        )
    receipts.sort(key=lambda r: r.id)
    return receipts, report


def _items_as_sent(response_dict: dict, customized_response_dict: dict, **_) -> None:
    """botocore `before-parse` hook for this loader's Query calls: hand the Items over as JSON decoding gives
    them (exactly the wire format {"S": ...}, {"N": "1.5"}, {"M": {...}}: no binary attributes are read) and
    let botocore's shape-by-shape parser, most of the client's CPU per item, parse only the rest of the page
    (Count, LastEvaluatedKey). Its own handlers customise responses the same way."""
    if response_dict.get("status_code") != 200 or not isinstance(response_dict.get("body"), bytes):
        return
    page = json.loads(response_dict["body"])
    if "Items" in page:
        customized_response_dict["Items"] = page.pop("Items")
        response_dict["body"] = json.dumps(page).encode()


def _projection(*names: str) -> tuple[str, dict[str, str]]:
    """A ProjectionExpression over placeholders (TYPE, text, ... are DynamoDB reserved words)."""
    placeholders = {f"#a{i}": name for i, name in enumerate(names)}
    return ", ".join(placeholders), placeholders


def _string(item: dict, name: str):
    """A wire item's S attribute as the wire codec reads it (other types decoded; absent -> None)."""
    attr = item.get(name)
    if attr is None:
        return None
    value = attr.get("S")
    return value if value is not None else from_wire(attr)


# The label query reads one partition (VALIDATION_STATUS#<status>), whose pages come one after another;
# it is read as 16 sort-key ranges at once instead. Sort keys start `IMAGE#<image uuid>`, so the uuid's
# first hex digit spreads the labels evenly; the first and last ranges are open, so every key is covered.
_BOUNDS = [None, *(f"IMAGE#{digit}" for digit in "123456789abcdef"), None]
LABEL_RANGES = list(zip(_BOUNDS[:-1], _BOUNDS[1:], strict=True))


def _labels(table: DynamoTable, status: str, lo: str | None, hi: str | None) -> list[tuple]:
    """((image id, receipt number), (line id, word id), canonical label name) of each label of a status
    whose GSI3 sort key lies in [lo, hi) (None: unbounded)."""
    if lo is None:
        condition, values = "#sk < :hi", {":hi": {"S": hi}}
    elif hi is None:
        condition, values = "#sk >= :lo", {":lo": {"S": lo}}
    else:  # BETWEEN includes hi: a key equal to hi is skipped below, the next range has it
        condition, values = "#sk BETWEEN :lo AND :hi", {":lo": {"S": lo}, ":hi": {"S": hi}}
    projection, names = _projection("PK", "SK", "TYPE", "GSI3SK")
    rows = []
    for item in table.query_wire(
        IndexName="GSI3",
        KeyConditionExpression=f"#pk = :pk AND {condition}",
        ProjectionExpression=projection,
        ExpressionAttributeNames={**names, "#pk": "GSI3PK", "#sk": "GSI3SK"},
        ExpressionAttributeValues={**values, ":pk": {"S": f"VALIDATION_STATUS#{status}"}},
    ):
        if _string(item, "TYPE") != "RECEIPT_WORD_LABEL" or (hi is not None and item["GSI3SK"]["S"] >= hi):
            continue
        sk = item["SK"]["S"]
        parts = _parse_sk(sk)
        receipt = (item["PK"]["S"].removeprefix("IMAGE#"), int(parts["RECEIPT"]))
        rows.append((receipt, (int(parts["LINE"]), int(parts["WORD"])), canonical_label(sk.split("#LABEL#", 1)[1])))
    return rows


CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
WORD_ATTRIBUTES = ("TYPE", "SK", "text", *CORNERS, "bounding_box")
# GSI4 sort keys of one receipt: 0_RECEIPT, 2_LINE#<l>, 3_WORD#<l>#<w>, 4_LABEL#<l>#<w>#<LABEL>. The
# range 0_RECEIPT..3_WORD$ ('$' sorts right after '#') holds the Receipt and its words, not the labels.
GSI4_FIRST, GSI4_LAST = "0_RECEIPT", "3_WORD$"


@dataclass
class _Fetched:
    """One receipt as read from the table: its page size and words (line id, word id, text, box or None)."""

    width: float
    height: float
    words: list[tuple[int, int, str, tuple[float, float, float, float] | None]]


def _fetch_receipt(table: DynamoTable, iid: str, r: int) -> _Fetched | None:
    """A receipt's size and words, None without a Receipt item with width and height (in a worker thread).

    One GSI4 query returns the Receipt item and the words (the server filters the lines out). What it
    does not find (items written without GSI4 keys) is read the spec's other way: GetItem, GSI3 words.
    """
    base = f"IMAGE#{iid}#RECEIPT#{r:05d}"
    projection, names = _projection(*WORD_ATTRIBUTES, "width", "height")
    receipt_item, word_items = None, []
    for item in table.query_wire(
        IndexName="GSI4",
        KeyConditionExpression="#pk = :pk AND #sk BETWEEN :first AND :last",
        FilterExpression="#a0 IN (:receipt, :word)",
        ProjectionExpression=projection,
        ExpressionAttributeNames={**names, "#pk": "GSI4PK", "#sk": "GSI4SK"},
        ExpressionAttributeValues={
            ":pk": {"S": base},
            ":first": {"S": GSI4_FIRST},
            ":last": {"S": GSI4_LAST},
            ":receipt": {"S": "RECEIPT"},
            ":word": {"S": "RECEIPT_WORD"},
        },
    ):
        if item["TYPE"]["S"] == "RECEIPT_WORD":
            word_items.append(item)
        elif item["SK"]["S"] == f"RECEIPT#{r:05d}":
            receipt_item = {k: from_wire(item[k]) for k in ("width", "height") if k in item}
    if receipt_item is None:
        receipt_item = table.get(f"IMAGE#{iid}", f"RECEIPT#{r:05d}") or {}
    width, height = receipt_item.get("width"), receipt_item.get("height")
    if not width or not height or width <= 0 or height <= 0:
        return None
    if not word_items:
        projection, names = _projection(*WORD_ATTRIBUTES)
        word_items = table.query_wire(
            IndexName="GSI3",
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :sk)",
            ProjectionExpression=projection,
            ExpressionAttributeNames={**names, "#pk": "GSI3PK", "#sk": "GSI3SK"},
            ExpressionAttributeValues={":pk": {"S": base}, ":sk": {"S": "WORD"}},
        )
    words = []
    for item in word_items:
        if _string(item, "TYPE") != "RECEIPT_WORD":
            continue
        parts = _parse_sk(item["SK"]["S"])
        text = (_string(item, "text") or "").strip()
        words.append((int(parts["LINE"]), int(parts["WORD"]), text, _wire_page_box(item, width, height)))
    return _Fetched(width, height, words)


def _build_receipt(
    key: tuple[str, int],
    fetched: _Fetched | None,
    labels: dict[tuple[int, int], set[str]],
    statuses: tuple[str, ...],
    table: DynamoTable,
    word_ids: bool = False,
) -> tuple[Receipt | None, dict]:
    """One receipt's words with their labels, and its drop counts.

    word_ids: also keep each word's (line id, word id) in `extra["word_ids"]` (for writing labels back).
    """
    drops: dict[str, int] = {}

    def drop(reason: str, n: int = 1) -> None:
        drops[reason] = drops.get(reason, 0) + n

    if fetched is None:
        drop("labelled receipt without a Receipt item with width and height")
        return None, drops
    labels = dict(labels)  # popped below as words claim their labels
    found: list[tuple[int, int, Word]] = []
    for line_id, word_id, text, box in fetched.words:
        names = labels.pop((line_id, word_id), set())
        if not text or box is None:
            drop("word with empty text" if not text else "word without corner points")
            continue
        label = _word_label(names, statuses, drop)
        found.append((line_id, word_id, Word(text=text, box=box, line=line_id, label=label)))
    if labels:
        drop("label whose word is missing", sum(len(v) for v in labels.values()))
    if not found:
        drop("labelled receipt with no words")
        return None, drops
    found.sort(key=lambda f: (f[0], f[2].box[0], f[1]))
    receipt = Receipt(
        id=receipt_key(*key),
        width=fetched.width,
        height=fetched.height,
        words=[w for _, _, w in found],
        extra={"source": table.description},
    )
    if word_ids:
        receipt.extra["word_ids"] = [(line_id, word_id) for line_id, word_id, _ in found]
    return receipt, drops


def load_receipts_by_key(
    table: DynamoTable, keys: list[tuple[str, int]], max_workers: int = 8
) -> tuple[list[Receipt], LoadReport]:
    """Receipts named by (image id, receipt number), every word `O`, with `extra["word_ids"]`; in key order."""
    report = LoadReport(source=table.description)
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        fetched = list(pool.map(lambda key: _fetch_receipt(table, *key), keys))
    receipts = []
    for key, one in zip(keys, fetched, strict=True):
        receipt, drops = _build_receipt(key, one, {}, (), table, word_ids=True)
        for reason, n in drops.items():
            report.drop(reason.replace("labelled receipt", "receipt"), n)
        if receipt is not None:
            receipts.append(receipt)
    return receipts, report


def labelled_receipt_keys(table: DynamoTable, statuses=("VALID",)) -> set[tuple[str, int]]:
    """(image id, receipt number) of every receipt with a word label of these statuses (the GSI3 label query)."""
    return {
        receipt
        for status in statuses
        for lo, hi in LABEL_RANGES
        for receipt, _, _ in _labels(table, status.strip().upper(), lo, hi)
    }


def receipt_keys(table: DynamoTable) -> list[tuple[str, int]]:
    """(image id, receipt number) of every Receipt item (GSITYPE `RECEIPT`: Receipt items only), sorted."""
    keys = []
    for item in table.query("RECEIPT", index="GSITYPE"):
        keys.append((item["PK"].removeprefix("IMAGE#"), int(_parse_sk(item["SK"])["RECEIPT"])))
    return sorted(keys)


def _word_label(names: set[str], statuses: tuple[str, ...], drop) -> str:
    if not names:
        return "O"
    label = pick_label(names)
    if len(names) > 1:
        others = ", ".join(sorted(names - {label}))
        drop(f"word with several {'/'.join(statuses)} labels: kept {label} over {others}")
    return label


def _wire_page_box(item: dict, width: float, height: float) -> tuple[float, float, float, float] | None:
    """_page_box of a wire item: the four corners read directly (float of the number string is what the
    wire codec's int-or-float gives after float()); anything else goes through the codec."""
    corners = [(item.get(k) or {}).get("M") for k in CORNERS]
    if all(c and "x" in c and "y" in c for c in corners):
        try:
            xs, ys = [float(c["x"]["N"]) for c in corners], [float(c["y"]["N"]) for c in corners]
        except (KeyError, TypeError):  # a coordinate that is not a number: let the codec and _page_box judge
            pass
        else:
            return _box(xs, ys, width, height)
    return _page_box(item_from_wire(item), width, height)


def _page_box(item: dict, width: float, height: float) -> tuple[float, float, float, float] | None:
    """Corners (0-1, origin bottom-left, y up) -> [x0, y0, x1, y1] in page units, origin top-left."""
    corners = [item.get(k) for k in CORNERS]
    if all(isinstance(c, dict) and "x" in c and "y" in c for c in corners):
        xs, ys = [float(c["x"]) for c in corners], [float(c["y"]) for c in corners]
    elif isinstance(item.get("bounding_box"), dict):  # older items: {x, y (bottom), width, height}
        b = item["bounding_box"]
        xs, ys = [b["x"], b["x"] + b["width"]], [b["y"], b["y"] + b["height"]]
    else:
        return None
    return _box(xs, ys, width, height)


def _box(xs: list[float], ys: list[float], width: float, height: float) -> tuple[float, float, float, float]:
    clamp = lambda v: min(1.0, max(0.0, v))  # noqa: E731
    x0, x1 = clamp(min(xs)) * width, clamp(max(xs)) * width
    y0, y1 = (1 - clamp(max(ys))) * height, (1 - clamp(min(ys))) * height
    # 1e-4 page units is far below a pixel and keeps float noise (66.99999999999997) out of files.
    return (_tidy(x0, width), _tidy(y0, height), _tidy(x1, width), _tidy(y1, height))


def _tidy(value: float, limit: float) -> float:
    return min(float(limit), round(value, 4))


# --- importing ------------------------------------------------------------------------


def import_receipts(receipts: list[Receipt], table_name: str, aws: AwsSettings | None = None) -> dict[str, int]:
    """Write receipts as Receipt/ReceiptLine/ReceiptWord/ReceiptWordLabel items; returns counts per kind."""
    table = DynamoTable(table_name, aws)
    counts = {"receipts": 0, "lines": 0, "words": 0, "labels": 0}
    items: list[dict] = []
    for receipt in receipts:
        receipt_items = receipt_to_items(receipt)
        for item in receipt_items:
            kind = {
                "RECEIPT": "receipts",
                "RECEIPT_LINE": "lines",
                "RECEIPT_WORD": "words",
                "RECEIPT_WORD_LABEL": "labels",
            }[item["TYPE"]]
            counts[kind] += 1
        items.extend(receipt_items)
        if len(items) >= 500:  # write as we go: bounded memory for big files
            table.put_many(items)
            items = []
    table.put_many(items)
    return counts


def receipt_to_items(receipt: Receipt) -> list[dict]:
    iid = image_id_for(receipt.id)
    r = f"{RECEIPT_NUMBER:05d}"
    base = f"IMAGE#{iid}#RECEIPT#{r}"
    at = now_iso()
    width, height = _number(receipt.width), _number(receipt.height)
    items = [
        {
            "PK": f"IMAGE#{iid}",
            "SK": f"RECEIPT#{r}",
            "TYPE": "RECEIPT",
            "GSI1PK": f"IMAGE#{iid}",
            "GSI1SK": f"RECEIPT#{r}",
            "GSI2PK": "RECEIPT",
            "GSI2SK": base,
            "GSI4PK": base,
            "GSI4SK": "0_RECEIPT",
            "width": width,
            "height": height,
            "timestamp_added": at,
            "raw_s3_bucket": "",
            "raw_s3_key": receipt.id,
        }
    ]
    # The crop covers its whole (derived) image; the spec gives a Receipt corners but no bounding_box.
    page = _corners((0.0, 0.0, float(receipt.width), float(receipt.height)), receipt.width, receipt.height)
    items[0].update({k: v for k, v in page.items() if k != "bounding_box"})
    lines: dict[int, list[Word]] = {}
    for word in receipt.words:
        lines.setdefault(_line_id(word, receipt), []).append(word)
    for line_id, words in lines.items():
        ln = f"{line_id:05d}"
        items.append(_line_item(iid, r, ln, words, receipt))
        for word_number, word in enumerate(words, start=1):
            w = f"{word_number:05d}"
            items.append(_word_item(iid, r, ln, w, word, receipt))
            label = canonical_label(word.label)
            if label != "O":
                items.append(label_item(iid, r, ln, w, label, receipt, at))
    return items


def _line_id(word: Word, receipt: Receipt) -> int:
    if not 0 <= word.line <= 99999:
        raise UserError(
            f"Receipt {receipt.id!r}: line id {word.line} does not fit the table's 5-digit ids "
            "(0-99999); renumber the lines in the dataset."
        )
    return word.line


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _corners(box, width, height) -> dict:
    """A page box (origin top-left) -> the spec's 0-1 bottom-left corners and bounding_box."""
    x0, y0, x1, y1 = box
    left, right = x0 / width, x1 / width
    top, bottom = 1 - y0 / height, 1 - y1 / height
    return {
        "top_left": {"x": left, "y": top},
        "top_right": {"x": right, "y": top},
        "bottom_left": {"x": left, "y": bottom},
        "bottom_right": {"x": right, "y": bottom},
        "bounding_box": {"x": left, "y": bottom, "width": right - left, "height": top - bottom},
    }


def _geometry(box, receipt: Receipt) -> dict:
    return {
        **_corners(box, receipt.width, receipt.height),
        "angle_degrees": 0,
        "angle_radians": 0,
        "confidence": 1.0,
        "embedding_status": "NONE",
        "is_noise": False,
    }


def _line_item(iid: str, r: str, ln: str, words: list[Word], receipt: Receipt) -> dict:
    base = f"IMAGE#{iid}#RECEIPT#{r}"
    union = (
        min(w.box[0] for w in words),
        min(w.box[1] for w in words),
        max(w.box[2] for w in words),
        max(w.box[3] for w in words),
    )
    return {
        "PK": f"IMAGE#{iid}",
        "SK": f"RECEIPT#{r}#LINE#{ln}",
        "TYPE": "RECEIPT_LINE",
        "GSI1PK": "EMBEDDING_STATUS#NONE",
        "GSI1SK": f"LINE#{base}#LINE#{ln}",
        "GSI3PK": base,
        "GSI3SK": "LINE",
        "GSI4PK": base,
        "GSI4SK": f"2_LINE#{ln}",
        "text": " ".join(w.text for w in words),
        **_geometry(union, receipt),
    }


def _word_item(iid: str, r: str, ln: str, w: str, word: Word, receipt: Receipt) -> dict:
    base = f"IMAGE#{iid}#RECEIPT#{r}"
    return {
        "PK": f"IMAGE#{iid}",
        "SK": f"RECEIPT#{r}#LINE#{ln}#WORD#{w}",
        "TYPE": "RECEIPT_WORD",
        "GSI1PK": "EMBEDDING_STATUS#NONE",
        "GSI1SK": f"WORD#{base}#LINE#{ln}#WORD#{w}",
        "GSI2PK": "RECEIPT",
        "GSI2SK": f"{base}#LINE#{ln}#WORD#{w}",
        "GSI3PK": base,
        "GSI3SK": "WORD",
        "GSI4PK": base,
        "GSI4SK": f"3_WORD#{ln}#{w}",
        "text": word.text,
        **_geometry(word.box, receipt),
        "extracted_data": None,
    }


def label_item(
    iid: str,
    r: str,
    ln: str,
    w: str,
    label: str,
    receipt: Receipt,
    at: str,
    status: str = "VALID",
    proposed_by: str = "receipt_layoutlm import",
    reasoning: str | None = None,
) -> dict:
    """A ReceiptWordLabel with every key of the spec; import writes VALID ones, propose PENDING ones."""
    if "#" in label or not label:
        raise UserError(
            f"Receipt {receipt.id!r}: label {label!r} cannot be stored in a DynamoDB key; rename it in the dataset."
        )
    base = f"IMAGE#{iid}#RECEIPT#{r}"
    word_key = f"{base}#LINE#{ln}#WORD#{w}"
    return {
        "PK": f"IMAGE#{iid}",
        "SK": f"RECEIPT#{r}#LINE#{ln}#WORD#{w}#LABEL#{label}",
        "TYPE": "RECEIPT_WORD_LABEL",
        "GSI1PK": f"LABEL#{label}".ljust(40, "_"),
        "GSI1SK": word_key,
        "GSI2PK": "RECEIPT",
        "GSI2SK": word_key,
        "GSI3PK": f"VALIDATION_STATUS#{status}",
        "GSI3SK": f"{word_key}#LABEL#{label}",
        "GSI4PK": base,
        "GSI4SK": f"4_LABEL#{ln}#{w}#{label}",
        "validation_status": status,
        "timestamp_added": at,
        "reasoning": reasoning,
        "label_proposed_by": proposed_by,
        "label_consolidated_from": None,
    }
