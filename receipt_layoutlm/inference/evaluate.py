"""A model judged on labelled receipts: entity-level scores (seqeval), the word-level confusion
matrix, and each receipt's errors.

The data's labels are read as the model's run read them (its merges and whitelist). Labels in
the data that the model never learned stay in the reference: they count as missed entities
and are listed under `unknown_labels`, never dropped.
"""

from __future__ import annotations

from collections import Counter

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from ..labels import LABEL_ORDER
from ..metrics import entity_scores


def _span(receipt, start: int, end: int) -> dict:
    return {"text": " ".join(w.text for w in receipt.words[start : end + 1]), "words": list(range(start, end + 1))}


def receipt_errors(receipt, true: list[str], prediction) -> dict:
    """Missed, spurious and confused entities of one receipt (exact spans, as seqeval scores them)."""
    true_spans = {(s, e): t for t, s, e in get_entities(true)}
    pred_spans = {(s, e): t for t, s, e in get_entities(prediction.tags)}
    missed, spurious, confused = [], [], []
    for (s, e), label in sorted(true_spans.items()):
        if (s, e) not in pred_spans:
            missed.append({"label": label, **_span(receipt, s, e)})
        elif pred_spans[(s, e)] != label:
            conf = sum(prediction.words[i].confidence for i in range(s, e + 1)) / (e - s + 1)
            confused.append(
                {"label": label, "predicted": pred_spans[(s, e)], **_span(receipt, s, e), "confidence": conf}
            )
    for (s, e), label in sorted(pred_spans.items()):
        if (s, e) not in true_spans:
            conf = sum(prediction.words[i].confidence for i in range(s, e + 1)) / (e - s + 1)
            spurious.append({"label": label, **_span(receipt, s, e), "confidence": conf})
    word_errors = sum((t[2:] if t != "O" else "O") != w.label for t, w in zip(true, prediction.words))
    return {
        "id": receipt.id,
        "errors": len(missed) + len(spurious) + len(confused),
        "word_errors": word_errors,
        "missed": missed,
        "spurious": spurious,
        "confused": confused,
    }


def evaluate_predictions(receipts, true_tags: list[list[str]], predictions, model_labels: list[str]) -> dict:
    pred_tags = [p.tags for p in predictions]
    in_data = Counter(t[2:] for tags in true_tags for t in tags if t.startswith("B-"))
    unknown = {
        t: n for t, n in sorted(in_data.items(), key=lambda kv: LABEL_ORDER.get(kv[0], 99)) if t not in model_labels
    }
    types = list(model_labels) + list(unknown)
    scores = entity_scores(true_tags, pred_tags, types)
    per_label = {t: {k: scores[f"label_{t}_{k}"] for k in ("precision", "recall", "f1", "support")} for t in types}
    macro = {
        "precision": float(precision_score(true_tags, pred_tags, average="macro", zero_division=0)),
        "recall": float(recall_score(true_tags, pred_tags, average="macro", zero_division=0)),
        "f1": float(f1_score(true_tags, pred_tags, average="macro", zero_division=0)),
    }
    # Word level: each word's entity type (B/I dropped), rows = reference, columns = prediction.
    names = ["O"] + types
    index = {n: i for i, n in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    for tags, p in zip(true_tags, predictions):
        for t, w in zip(tags, p.words):
            matrix[index[t[2:] if t != "O" else "O"]][index[w.label]] += 1
    per_receipt = [receipt_errors(r, t, p) for r, t, p in zip(receipts, true_tags, predictions)]
    worst = sorted(per_receipt, key=lambda e: (-e["errors"], -e["word_errors"], e["id"]))[:10]
    return {
        "receipts": len(receipts),
        "words": sum(len(r.words) for r in receipts),
        "entities": sum(in_data.values()),
        "micro": {k: scores[k] for k in ("precision", "recall", "f1")},
        "macro": macro,
        "per_label": per_label,
        "confusion": {"labels": names, "matrix": matrix},
        "worst_receipts": [e for e in worst if e["errors"] or e["word_errors"]],
        "unknown_labels": unknown,
        "per_receipt": per_receipt,
    }


def evaluate_model(tagger, receipts) -> dict:
    from .predict import reference_tags

    true, counts = reference_tags(tagger, receipts)
    result = evaluate_predictions(receipts, true, tagger.predict_receipts(receipts), tagger.labels)
    result.update(
        merge_amounts=tagger.merge_amounts,
        allowed_labels=tagger.allowed_labels,
        labels_before=counts["labels_before"],
        labels_after=counts["labels_after"],
    )
    return result
