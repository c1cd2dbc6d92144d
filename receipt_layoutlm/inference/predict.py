"""Label receipts with a trained model (a run's best/ or an ONNX export), and score it where labels exist."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def predict_receipts(model_dir: Path, spec: str, output: Path | None = None, batch_size: int = 16) -> dict:
    from ..labels import entity_types, resolve_allowed_labels
    from ..metrics import entity_scores
    from ..sources import Receipt, Word, load_receipts
    from ..sources.jsonl import write_jsonl
    from ..training.features import build_examples, merge_predictions, sequences
    from ..training.recipe import tag_receipts
    from .words import load_model_dir, token_ids

    loaded = load_model_dir(model_dir)  # ONNX Runtime when the folder holds an ONNX export
    meta, tokenizer, id2label = loaded.settings, loaded.tokenizer, loaded.id2label
    receipts, _ = load_receipts(spec)
    if not receipts:
        raise UserError(f"The dataset {spec} holds no receipt with words.")
    # Score against the data's labels as the model was trained to see them.
    allowed = resolve_allowed_labels(meta.get("allowed_labels"), meta.get("merge_amounts", False))
    tagged, _ = tag_receipts(receipts, meta.get("merge_amounts", False), allowed)
    seqs = sequences(tagged, "receipt")
    label2id = {v: k for k, v in id2label.items()}
    safe = {t: label2id.get(t, 0) for s in seqs for t in s["tags"]}  # tags unknown to the model: scored, not fed
    examples, windows = build_examples(
        seqs, tokenizer, safe, meta.get("max_seq_length", 512), meta.get("window_overlap", 128)
    )
    pred = merge_predictions(
        token_ids(loaded, examples, batch_size), windows, [len(s["texts"]) for s in seqs], id2label
    )
    summary = {"receipts": len(receipts), "words": sum(len(s["texts"]) for s in seqs)}
    if any(t != "O" for s in seqs for t in s["tags"]):
        summary.update(entity_scores([s["tags"] for s in seqs], pred, entity_types(list(id2label.values()))))
    if output:
        labelled = [
            Receipt(
                r.id,
                r.width,
                r.height,
                [Word(w.text, w.box, w.line, tag[2:] if tag != "O" else "O") for w, tag in zip(r.words, p)],
                r.extra,
            )
            for r, p in zip(receipts, pred)
        ]
        write_jsonl(labelled, Path(output))
    return summary
