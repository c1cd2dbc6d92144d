"""Entity-level scores with seqeval: micro precision/recall/F1 over entities (O ignored),
and the same per label for every entity type of the run, zero-support ones included."""

from __future__ import annotations

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score


def entity_scores(true_tags: list[list[str]], pred_tags: list[list[str]], types: list[str]) -> dict:
    scores = {
        "precision": precision_score(true_tags, pred_tags, zero_division=0),
        "recall": recall_score(true_tags, pred_tags, zero_division=0),
        "f1": f1_score(true_tags, pred_tags, zero_division=0),
    }
    report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    for t in types:
        row = report.get(t, {})
        scores[f"label_{t}_f1"] = float(row.get("f1-score", 0.0))
        scores[f"label_{t}_precision"] = float(row.get("precision", 0.0))
        scores[f"label_{t}_recall"] = float(row.get("recall", 0.0))
        scores[f"label_{t}_support"] = int(row.get("support", 0))
    return {k: (float(v) if not isinstance(v, int) else v) for k, v in scores.items()}


def word_confusion(true_tags: list[list[str]], pred_tags: list[list[str]], types: list[str]) -> dict:
    """Word-level confusion of entity types (B-/I- dropped): matrix[reference][prediction], rows and
    columns in the order ["O", *types]; every type in the tags must be one of `types`."""
    names = ["O", *types]
    index = {n: i for i, n in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    for true, pred in zip(true_tags, pred_tags):
        for t, p in zip(true, pred):
            matrix[index[t[2:] if t != "O" else "O"]][index[p[2:] if p != "O" else "O"]] += 1
    return {"labels": names, "matrix": matrix}
