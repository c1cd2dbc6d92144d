"""The training recipe as small pure functions (README.md, "What each recipe flag does").

receipts -> final labels (merge, whitelist) -> BIO tags -> label list (whole dataset)
-> seeded receipt-level split -> seeded O-line thinning of the training split.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

from ..errors import UserError
from ..labels import LABEL_ORDER, final_label
from ..sources import Receipt


@dataclass
class TaggedReceipt:
    """A receipt ready for tokenisation: one BIO tag per word, boxes on the 0..1000 grid."""

    id: str
    texts: list[str]
    boxes: list[list[int]]
    lines: list[int]
    tags: list[str]
    # Words whose tag is not supervised (lines dropped by O:entity thinning).
    unsupervised: set[int] = field(default_factory=set)


def normalize_box(box, width: float, height: float) -> list[int]:
    """Page units -> LayoutLM's integer 0..1000 grid: scale, round, clamp, order corners."""
    x0, y0, x1, y1 = box
    scaled = [round(1000 * x0 / width), round(1000 * y0 / height), round(1000 * x1 / width), round(1000 * y1 / height)]
    x0, y0, x1, y1 = (min(1000, max(0, v)) for v in scaled)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def line_boxes(boxes: list[list[int]], lines: list[int]) -> list[list[int]]:
    """--box-level line: each word takes its OCR line's box, the union of the line's word boxes
    (segment-level boxes, as LayoutLMv3 and LiLT use)."""
    union: dict[int, list[int]] = {}
    for box, line in zip(boxes, lines):
        u = union.get(line)
        union[line] = (
            list(box) if u is None else [min(u[0], box[0]), min(u[1], box[1]), max(u[2], box[2]), max(u[3], box[3])]
        )
    return [list(union[line]) for line in lines]


def bio_tags(labels: list[str], lines: list[int]) -> list[str]:
    """A non-O word starts a span (B-X) unless the previous word of the same line has label X."""
    tags = []
    for i, (label, line) in enumerate(zip(labels, lines)):
        if label == "O":
            tags.append("O")
        elif i > 0 and labels[i - 1] == label and lines[i - 1] == line:
            tags.append(f"I-{label}")
        else:
            tags.append(f"B-{label}")
    return tags


def tag_receipts(receipts: list[Receipt], merge_amounts: bool, allowed) -> tuple[list[TaggedReceipt], dict]:
    """Apply merges and the whitelist, tag BIO, and count labels before and after."""
    tagged, before, after = [], Counter(), Counter()
    for r in receipts:
        labels = []
        for w in r.words:
            label = final_label(w.label, merge_amounts, allowed)
            if w.label not in ("O", ""):
                before[w.label.upper()] += 1
            if label != "O":
                after[label] += 1
            labels.append(label)
        lines = [w.line for w in r.words]
        tagged.append(
            TaggedReceipt(
                id=r.id,
                texts=[w.text for w in r.words],
                boxes=[normalize_box(w.box, r.width, r.height) for w in r.words],
                lines=lines,
                tags=bio_tags(labels, lines),
            )
        )
    return tagged, {"labels_before": dict(sorted(before.items())), "labels_after": dict(sorted(after.items()))}


def build_label_list(tagged: list[TaggedReceipt]) -> list[str]:
    """O, then B-/I- of every entity type in the WHOLE dataset (not the training split alone)."""
    types = {t[2:] for r in tagged for t in r.tags if t != "O"}
    if not types:
        raise UserError(
            "No entity label is left after --merge-amounts/--allowed-label; every word would be O. "
            "Check the dataset's labels (`layoutlm-cli dataset stats`) and the --allowed-label list."
        )
    ordered = sorted(types, key=lambda t: LABEL_ORDER.get(t, len(LABEL_ORDER)))
    return ["O"] + [f"{p}-{t}" for t in ordered for p in ("B", "I")]


def _unit_hash(*parts) -> float:
    """A uniform number in [0, 1) from its parts: seeded, order-independent decisions."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_ids(ids: list[str], val_ratio: float, seed: int) -> tuple[list[str], list[str]]:
    """Receipt-level split decided per receipt by hash(seed, id) < val_ratio.

    Same seed and ids give the same split in any order, and a receipt keeps its side when
    the dataset grows, so runs stay comparable. At least one receipt goes to each side.
    """
    return split_groups(ids, {i: i for i in ids}, val_ratio, seed)


def split_groups(ids: list[str], group_of: dict[str, str], val_ratio: float, seed: int) -> tuple[list[str], list[str]]:
    """Group-level split: a group goes to validation when hash(seed, group) < val_ratio, all its receipts with it.

    With one group per receipt (its id) this is the receipt split. At least one group goes to each side.
    """
    if not 0 <= val_ratio < 1:
        raise UserError(f"--val-ratio must be in [0, 1), got {val_ratio}.")
    if len(ids) < 2:
        raise UserError(f"The dataset has {len(ids)} receipt(s); at least 2 are needed to train and validate.")
    groups = sorted({group_of[i] for i in ids})
    if len(groups) < 2:
        raise UserError(
            f"All {len(ids)} receipts belong to one merchant group ({groups[0]!r}); --split-by merchant needs at "
            "least 2 merchants, so use --split-by receipt or add receipts of other merchants."
        )
    score = {g: _unit_hash(seed, "split", g) for g in groups}
    scored = sorted(groups, key=score.__getitem__)
    val = {g for g in groups if score[g] < val_ratio}
    if not val and val_ratio > 0:
        val = {scored[0]}
    if len(val) == len(groups):
        val.discard(scored[-1])
    return [i for i in ids if group_of[i] not in val], [i for i in ids if group_of[i] in val]


def merchant_group(receipt: Receipt) -> str:
    """The merchant a receipt belongs to, for --split-by merchant.

    Its `group` field when the JSONL has one; else its MERCHANT_NAME words in reading order,
    lowercased, punctuation stripped, whitespace collapsed; a receipt without merchant words
    is a group of its own (keyed by its id), so it can never pull others along.
    """
    group = receipt.extra.get("group")
    if group not in (None, ""):
        return f"group:{group}"
    words = " ".join(w.text for w in receipt.words if w.label.upper() == "MERCHANT_NAME")
    name = " ".join(re.sub(r"[^\w\s]|_", "", words.lower()).split())
    return f"merchant:{name}" if name else f"receipt:{receipt.id}"


def thin_o_lines(train: list[TaggedReceipt], ratio: float | None, seed: int) -> dict:
    """--o-entity-ratio R on the training split: keep each all-O line with p = min(1, R*E/O).

    E = entity-labelled words in lines with at least one entity, O = words in all-O lines.
    Dropped lines are marked in `unsupervised` (receipt mode keeps them as context; line
    mode leaves them out). Returns the counts recorded with the run.
    """
    lines_o: list[tuple[TaggedReceipt, int, list[int]]] = []
    entity_words = o_words = 0
    for r in train:
        by_line: dict[int, list[int]] = {}
        for i, line in enumerate(r.lines):
            by_line.setdefault(line, []).append(i)
        for line, idx in by_line.items():
            n_entity = sum(r.tags[i] != "O" for i in idx)
            if n_entity:
                entity_words += n_entity
            else:
                o_words += len(idx)
                lines_o.append((r, line, idx))
    stats = {
        "o_entity_ratio": ratio,
        "entity_words": entity_words,
        "o_words_before": o_words,
        "ratio_before": o_words / entity_words if entity_words else None,
        "keep_probability": 1.0,
        "lines_dropped": 0,
        "words_dropped": 0,
    }
    if ratio is None or o_words == 0:
        stats.update(o_words_after=o_words, ratio_after=stats["ratio_before"])
        return stats
    keep_p = min(1.0, ratio * entity_words / o_words)
    for r, line, idx in lines_o:
        if _unit_hash(seed, "thin", r.id, line) >= keep_p:
            r.unsupervised.update(idx)
            stats["lines_dropped"] += 1
            stats["words_dropped"] += len(idx)
    o_after = o_words - stats["words_dropped"]
    stats.update(
        keep_probability=keep_p, o_words_after=o_after, ratio_after=o_after / entity_words if entity_words else None
    )
    return stats


def split_counts(tagged: list[TaggedReceipt]) -> dict:
    """Receipts, words, entity words and per-label entity counts of one split."""
    per_label = Counter(t[2:] for r in tagged for t in r.tags if t.startswith("B-"))
    return {
        "receipts": len(tagged),
        "words": sum(len(r.texts) for r in tagged),
        "lines": sum(len(set(r.lines)) for r in tagged),
        "entity_words": sum(t != "O" for r in tagged for t in r.tags),
        "entities_per_label": dict(sorted(per_label.items(), key=lambda kv: LABEL_ORDER.get(kv[0], 99))),
    }
