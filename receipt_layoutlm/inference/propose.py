"""`propose`: a trained model's labels written into the receipts table for the user's validation flow.

Which receipts: `one` (--image-id/--receipt-id), `all` (every Receipt item, GSITYPE index),
or `unlabelled` (those minus the receipts holding any VALID word label, GSI3
`VALIDATION_STATUS#VALID`); in image-id order, the first `--limit`. Their words are read as
training reads them (GSI3 per receipt, sources/dynamodb.py).

What is written: for every word whose predicted label is an entity with confidence >=
`--min-confidence` (words.py: P(B-X) + P(I-X)), one ReceiptWordLabel with all the
spec's keys, `validation_status` = --status, `label_proposed_by` = `layoutlm:<job_id>`,
`reasoning` = the confidence, `timestamp_added` now, `label_consolidated_from` NULL.
Each is a conditional put (`attribute_not_exists(PK)`): an existing label of the same
word and label (VALID or not) is never overwritten, only counted as skipped, so a second
run writes nothing. DynamoDB cannot batch conditional puts (BatchWriteItem has no
conditions), so the puts go out concurrently, retried by botocore on throttling.

AMOUNT: a model trained with --merge-amounts predicts AMOUNT, which is not one of the
table's canonical labels; propose refuses such a model unless --amount-label names the
table label to write for it (GRAND_TOTAL, LINE_TOTAL, SUBTOTAL or TAX) or `skip`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..labels import AMOUNT_MERGE, CANONICAL_LABELS
from ..sources import Receipt
from .words import WordPrediction

PROPOSE_STATUSES = ("PENDING", "NONE", "NEEDS_REVIEW")
AMOUNT_CHOICES = tuple(AMOUNT_MERGE) + ("skip",)
CHUNK = 64  # receipts read, predicted and written at a time: bounded memory for big tables
WRITE_THREADS = 8


@dataclass
class ProposeSummary:
    receipts: int = 0
    words: int = 0
    proposed: int = 0  # entity words at or above --min-confidence
    written: int = 0
    skipped_existing: int = 0
    below_confidence: int = 0
    skipped_amount: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # receipts/words the reader could not use
    dry_run: bool = False


@dataclass(frozen=True)
class Proposal:
    receipt: str  # <iid>#<r>
    line_id: int
    word_id: int
    text: str
    label: str
    confidence: float
    item: dict


def table_label_map(model_labels: list[str], merge_amounts: bool, amount_label: str | None) -> dict[str, str | None]:
    """Model entity type -> label written to the table (None: not written)."""
    mapping: dict[str, str | None] = {}
    for name in model_labels:
        if name == "AMOUNT":
            if amount_label is None:
                raise UserError(
                    "This model was trained with --merge-amounts and predicts AMOUNT, which is not a table label; "
                    f"pass --amount-label {'|'.join(AMOUNT_CHOICES)} to write it as one of them or skip it."
                )
            mapping[name] = None if amount_label == "skip" else amount_label
        elif name in CANONICAL_LABELS:
            mapping[name] = name
        else:
            raise UserError(f"The model predicts {name!r}, which is not a table label; retrain it without that label.")
    if amount_label is not None and "AMOUNT" not in mapping:
        raise UserError("--amount-label applies only to models trained with --merge-amounts (they predict AMOUNT).")
    return mapping


def select_receipts(
    table, receipts: str, image_id: str | None, receipt_id: int | None, limit: int | None
) -> list[tuple[str, int]]:
    from ..sources.dynamodb import labelled_receipt_keys, receipt_keys

    if (image_id is None) != (receipt_id is None):
        raise UserError("Pass both --image-id and --receipt-id to name one receipt.")
    if image_id is not None:
        if table.get(f"IMAGE#{image_id}", f"RECEIPT#{receipt_id:05d}") is None:
            raise UserError(f"Receipt {image_id} #{receipt_id} is not in {table.description} (no Receipt item).")
        return [(image_id, receipt_id)]
    keys = receipt_keys(table)
    if receipts == "unlabelled":
        labelled = labelled_receipt_keys(table, ("VALID",))
        keys = [k for k in keys if k not in labelled]
    elif receipts != "all":
        raise UserError(f"--receipts {receipts!r}: use unlabelled or all.")
    return keys[:limit] if limit is not None else keys


def build_proposals(
    receipts: list[Receipt],
    predictions: list[list[WordPrediction]],
    label_map: dict[str, str | None],
    status: str,
    proposed_by: str,
    min_confidence: float,
    summary: ProposeSummary,
) -> list[Proposal]:
    from ..sources.dynamodb import label_item
    from ..store import now_iso

    at = now_iso()
    out = []
    for receipt, words in zip(receipts, predictions):
        iid, r = receipt.id.rsplit("#", 1)
        summary.receipts += 1
        summary.words += len(words)
        for word, (line_id, word_id), pred in zip(receipt.words, receipt.extra["word_ids"], words):
            if pred.label == "O":
                continue
            table_label = label_map.get(pred.label)
            if table_label is None:
                summary.skipped_amount += 1
                continue
            if pred.confidence < min_confidence:
                summary.below_confidence += 1
                continue
            summary.proposed += 1
            reasoning = f"{proposed_by} predicted {pred.label} with confidence {pred.confidence:.3f}"
            item = label_item(
                iid, r, f"{line_id:05d}", f"{word_id:05d}", table_label, receipt, at, status, proposed_by, reasoning
            )
            out.append(Proposal(receipt.id, line_id, word_id, word.text, table_label, pred.confidence, item))
    return out


def write_proposals(table, proposals: list[Proposal], dry_run: bool, summary: ProposeSummary) -> None:
    """Conditional puts (never overwrite); a dry run only reads whether each item exists."""
    from ..store.sqlite import ItemExists

    def one(p: Proposal) -> bool:
        if dry_run:
            return table.get(p.item["PK"], p.item["SK"]) is None
        try:
            table.put(p.item, must_not_exist=True)
            return True
        except ItemExists:
            return False

    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        for new in pool.map(one, proposals):
            if new:
                summary.written += 1
            else:
                summary.skipped_existing += 1


def propose_labels(
    model_dir: str | Path,
    table_name: str,
    receipts: str = "unlabelled",
    image_id: str | None = None,
    receipt_id: int | None = None,
    limit: int | None = None,
    status: str = "PENDING",
    min_confidence: float = 0.0,
    amount_label: str | None = None,
    dry_run: bool = False,
    batch_size: int = 16,
    aws=None,
    on_proposals: Callable[[list[Proposal]], None] | None = None,
    predict: Callable | None = None,
) -> ProposeSummary:
    """Run the model over the chosen receipts and write its labels (see the module docstring).

    `predict(receipts) -> per receipt, per word WordPrediction` defaults to words.predict_words
    with the model in model_dir; `on_proposals` sees every chunk's proposals (the CLI prints them).
    """
    from ..sources.dynamodb import load_receipts_by_key
    from ..store.dynamodb import DynamoTable
    from .words import load_model_dir, predict_words

    status = status.strip().upper()
    if status not in PROPOSE_STATUSES:
        raise UserError(f"--status {status!r}: proposals are written as {', '.join(PROPOSE_STATUSES)}, never VALID.")
    if not 0.0 <= min_confidence <= 1.0:
        raise UserError(f"--min-confidence {min_confidence} must lie between 0 and 1.")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit} must be at least 1.")
    loaded = load_model_dir(model_dir, batch_size=batch_size)
    job_id = loaded.settings.get("job_id")
    if not job_id:
        raise UserError(
            f"{model_dir}/label_map.json names no job_id; use a best/ folder written by `layoutlm-cli train`."
        )
    types = sorted({t[2:] for t in loaded.id2label.values() if t != "O"})
    label_map = table_label_map(types, loaded.settings.get("merge_amounts", False), amount_label)
    predict = predict or (lambda rs: predict_words(loaded, rs))

    table = DynamoTable(table_name, aws)
    keys = select_receipts(table, receipts, image_id, receipt_id, limit)
    summary = ProposeSummary(dry_run=dry_run)
    for start in range(0, len(keys), CHUNK):
        chunk, report = load_receipts_by_key(table, keys[start : start + CHUNK])
        for reason, n in report.dropped.items():
            summary.dropped[reason] = summary.dropped.get(reason, 0) + n
        if not chunk:
            continue
        proposals = build_proposals(
            chunk, predict(chunk), label_map, status, f"layoutlm:{job_id}", min_confidence, summary
        )
        write_proposals(table, proposals, dry_run, summary)
        if on_proposals:
            on_proposals(proposals)
    return summary
