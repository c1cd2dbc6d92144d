"""Label receipts with a trained model (a run's best/, or a job's), and score it where labels exist."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError


def load_tagger(model_ref, open_store=None, batch_size: int = 16, aws=None):
    """(ReceiptTagger, model dir) for `--model JOB_OR_DIR`."""
    from .resolve import resolve_model_dir
    from .tagger import ReceiptTagger

    model_dir = resolve_model_dir(model_ref, open_store, aws=aws)
    return ReceiptTagger.from_pretrained(model_dir, batch_size=batch_size), model_dir


def load_data(spec: str, aws=None):
    from ..sources import load_receipts

    receipts, report = load_receipts(spec, aws=aws)
    if not receipts:
        raise UserError(f"The dataset {spec} holds no receipt with words.")
    return receipts, report


def reference_tags(tagger, receipts) -> tuple[list[list[str]], dict]:
    """The data's labels as the model was trained to see them: its run's merges and whitelist, BIO-tagged."""
    from ..labels import resolve_allowed_labels
    from ..training.recipe import tag_receipts

    allowed = resolve_allowed_labels(tagger.allowed_labels, tagger.merge_amounts)
    tagged, counts = tag_receipts(receipts, tagger.merge_amounts, allowed)
    return [t.tags for t in tagged], counts


def prediction_record(receipt, prediction) -> dict:
    """The dataset format (words carry the predicted label and its confidence) plus the entities."""
    return {
        "id": receipt.id,
        "width": receipt.width,
        "height": receipt.height,
        **receipt.extra,
        "words": [
            {
                "text": w.text,
                "box": list(w.box),
                "line": w.line,
                **({"label": w.label} if w.label != "O" else {}),
                "confidence": round(w.confidence, 4),
            }
            for w in prediction.words
        ],
        "entities": [
            {
                "label": e.label,
                "text": e.text,
                "words": e.words,
                "box": list(e.box),
                "confidence": round(e.confidence, 4),
            }
            for e in prediction.entities
        ],
    }


def predict_receipts(
    model_ref, spec: str, output: Path | None = None, batch_size: int = 16, open_store=None, aws=None
) -> dict:
    from ..metrics import entity_scores
    from ..training.artifacts import atomic_write_text

    if output:
        check_writable(Path(output))
    tagger, _ = load_tagger(model_ref, open_store, batch_size, aws)
    receipts, _ = load_data(spec, aws)
    predictions = tagger.predict_receipts(receipts)
    true, _ = reference_tags(tagger, receipts)
    summary = {
        "receipts": len(receipts),
        "words": sum(len(r.words) for r in receipts),
        "entities": sum(len(p.entities) for p in predictions),
    }
    if any(t != "O" for tags in true for t in tags):
        summary.update(entity_scores(true, [p.tags for p in predictions], tagger.labels))
    if output:
        lines = [json.dumps(prediction_record(r, p), ensure_ascii=False) for r, p in zip(receipts, predictions)]
        try:
            atomic_write_text(Path(output), "\n".join(lines) + "\n")
        except OSError as e:
            raise UserError(f"Cannot write predictions to {output} ({e.strerror}); pass a writable --output.") from None
    return summary


def check_writable(output: Path) -> None:
    """Refuse an --output that cannot be written before the model runs, not after."""
    if output.is_dir():
        raise UserError(f"--output {output} is a directory; pass a file path such as {output / 'predictions.jsonl'}.")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create {output.parent} for --output ({e.strerror}); pass a writable path.") from None
    if not os.access(output.parent, os.W_OK):
        raise UserError(f"Cannot write into {output.parent} (permission denied); pass a writable --output.")
