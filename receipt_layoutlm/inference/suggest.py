"""`dataset suggest`: the unlabelled receipts whose labels would teach the model most, first.

`--by uncertainty`: the model labels every unlabelled receipt (words.predict_words) and
a receipt's score is the mean, over its words, of the entropy (natural log) of the
word's predicted tag distribution: high when the model hesitates across many words.
Diversity guard: at most `--per-merchant` receipts (default 2) share a merchant key, the
predicted MERCHANT_NAME words lower-cased and reduced to letters and digits, or, when the
model finds no merchant, the receipt's first line reduced the same way. Ties keep image-id
order.

`--by random`: a seeded random sample of the same receipts (no model run, no guard), the
baseline to measure uncertainty sampling against.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError
from ..sources import Receipt
from .words import WordPrediction


def merchant_key(receipt: Receipt, words: list[WordPrediction]) -> str:
    """Normalised predicted MERCHANT_NAME text, else the first line's text."""
    merchant = [w.text for w, p in zip(receipt.words, words) if p.label == "MERCHANT_NAME"]
    if not merchant and receipt.words:
        first_line = receipt.words[0].line
        merchant = [w.text for w in receipt.words if w.line == first_line]
    return re.sub(r"[^0-9a-z]+", "", " ".join(merchant).lower())[:40]


def mean_entropy(words: list[WordPrediction]) -> float:
    return sum(w.entropy for w in words) / len(words) if words else 0.0


def rank_by_uncertainty(
    receipts: list[Receipt], predictions: list[list[WordPrediction]], n: int, per_merchant: int = 2
) -> list[dict]:
    scored = sorted(
        ((mean_entropy(words), k) for k, words in enumerate(predictions)), key=lambda s: (-s[0], s[1])
    )  # stable on ties: input (image-id) order
    picked, per_key = [], {}
    for score, k in scored:
        key = merchant_key(receipts[k], predictions[k])
        if per_key.get(key, 0) >= per_merchant:
            continue
        per_key[key] = per_key.get(key, 0) + 1
        picked.append(
            {
                "receipt": receipts[k].id,
                "score": round(score, 6),
                "merchant_key": key,
                "reason": f"mean word entropy {score:.3f} over {len(predictions[k])} words"
                + (f", merchant {key!r}" if key else ""),
            }
        )
        if len(picked) == n:
            break
    return picked


def rank_randomly(receipt_ids: list[str], n: int, seed: int = 42) -> list[dict]:
    chosen = random.Random(seed).sample(receipt_ids, min(n, len(receipt_ids)))
    reason = f"random choice (seed {seed})"
    return [{"receipt": r, "score": None, "merchant_key": None, "reason": reason} for r in chosen]


def suggest_receipts(
    model_dir: str | Path | None,
    table_name: str,
    n: int = 50,
    by: str = "uncertainty",
    per_merchant: int = 2,
    seed: int = 42,
    batch_size: int = 16,
    aws=None,
    predict: Callable | None = None,
) -> list[dict]:
    """Up to n unlabelled receipts of the table, most informative first (see the module docstring)."""
    from ..sources.dynamodb import load_receipts_by_key, receipt_key
    from ..store.dynamodb import DynamoTable
    from .propose import select_receipts

    if n < 1:
        raise UserError(f"-n {n} must be at least 1.")
    if per_merchant < 1:
        raise UserError(f"--per-merchant {per_merchant} must be at least 1.")
    table = DynamoTable(table_name, aws)
    keys = select_receipts(table, "unlabelled", None, None, None)
    if by == "random":
        out = rank_randomly([receipt_key(iid, r) for iid, r in keys], n, seed)
    elif by == "uncertainty":
        if model_dir is None and predict is None:
            raise UserError("--by uncertainty needs --model (a run's best/ folder or an ONNX export).")
        if predict is None:
            from .words import load_model_dir, predict_words

            loaded = load_model_dir(model_dir, batch_size=batch_size)
            predict = lambda rs: predict_words(loaded, rs)  # noqa: E731
        receipts, _ = load_receipts_by_key(table, keys)
        out = rank_by_uncertainty(receipts, predict(receipts) if receipts else [], n, per_merchant)
    else:
        raise UserError(f"--by {by!r}: use uncertainty or random.")
    for row in out:
        iid, r = row["receipt"].rsplit("#", 1)
        row.update(image_id=iid, receipt_id=int(r))
    return out
