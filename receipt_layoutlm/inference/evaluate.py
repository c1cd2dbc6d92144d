"""A model judged on labelled receipts: entity-level scores (seqeval), the word-level confusion
matrix, and each receipt's errors.

The data's labels are read as the model's run read them (its merges and whitelist). Labels in
the data that the model never learned stay in the reference: they count as missed entities
and are listed under `unknown_labels`, never dropped.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from ..labels import LABEL_ORDER
from ..metrics import entity_scores, word_confusion


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
    confusion = word_confusion(true_tags, pred_tags, types)  # word level, rows = reference
    per_receipt = [receipt_errors(r, t, p) for r, t, p in zip(receipts, true_tags, predictions)]
    worst = sorted(per_receipt, key=lambda e: (-e["errors"], -e["word_errors"], e["id"]))[:10]
    # False positives (spurious or wrongly labelled entities), most confident first: the labels to check.
    queue = [
        {"id": e["id"], "kind": kind, **item}
        for e in per_receipt
        for kind in ("spurious", "confused")
        for item in e[kind]
    ]
    queue.sort(key=lambda q: (-q["confidence"], q["id"], q["words"][0]))
    return {
        "receipts": len(receipts),
        "words": sum(len(r.words) for r in receipts),
        "entities": sum(in_data.values()),
        "micro": {k: scores[k] for k in ("precision", "recall", "f1")},
        "macro": macro,
        "per_label": per_label,
        "confusion": confusion,
        "worst_receipts": [e for e in worst if e["errors"] or e["word_errors"]],
        "unknown_labels": unknown,
        "per_receipt": per_receipt,
        "review_queue": queue,
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


# --- evaluate --all-checkpoints --------------------------------------------------------
def run_dir_of(model_ref, open_store=None, aws=None, cache_dir: Path | None = None) -> Path:
    """A run's output folder (the one holding run.json) from a folder, its best/, or a job name/id; a job
    whose folder is not on this machine is fetched from S3 when it synced there."""
    from ..errors import UserError

    path = Path(model_ref).expanduser()
    for candidate in (path, path.parent):
        if path.exists() and (candidate / "run.json").is_file():
            return candidate
    if path.exists() or open_store is None:
        raise UserError(f"--all-checkpoints: {model_ref} holds no run.json; pass a run's output folder or a job.")
    store = open_store()
    job = store.resolve(str(model_ref))
    out = Path((job.job_config or {}).get("output_dir") or "")
    if (out / "run.json").is_file():
        return out
    if (job.storage or {}).get("bucket"):
        from .resolve import default_cache_dir

        return download_run(store, job, (cache_dir or default_cache_dir()) / job.job_id / "run", aws)
    raise UserError(
        f"--all-checkpoints: the checkpoints of job {job.name} are not on this machine ({out or 'no output_dir'}) "
        "nor in S3; run evaluate where it trained, or pass its output folder."
    )


def training_state(file_name: str) -> bool:
    """Files scoring a checkpoint does not need (optimiser, scheduler, scaler and RNG states): not fetched."""
    return file_name in ("optimizer.pt", "scheduler.pt", "scaler.pt") or file_name.startswith("rng_state")


def download_run(store, job, target: Path, aws=None) -> Path:
    """A job's run.json, its checkpoints still in S3 (model files only) and best/, into target (once)."""
    from ..errors import UserError
    from ..s3 import S3Sync
    from ..training.artifacts import replace_dir

    if (target / "run.json").is_file():
        return target
    storage = job.storage
    s3 = S3Sync(f"s3://{storage['bucket']}", job.name, aws)
    rows = store.checkpoints_in_s3(job.job_id)

    def fill(tmp: Path) -> None:
        try:
            s3.client.download_file(s3.bucket, storage["logs_prefix"] + "run.json", str(tmp / "run.json"))
        except Exception as e:  # noqa: BLE001 - any failure here is one sentence
            raise UserError(
                f"--all-checkpoints: job {job.name} has no run.json in s3://{s3.bucket}/{storage['logs_prefix']} "
                f"({e}); run evaluate where it trained."
            ) from None
        for row in rows:
            s3.download_dir(row["s3_key"], tmp / f"checkpoint-{row['step']}", skip=training_state)
        s3.download_dir(storage["best_prefix"], tmp / "best")

    target.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(target, fill)
    return target


def checkpoint_metric_value(scores: dict, name: str) -> float:
    """A --checkpoint-metric (val_f1, label_X_f1, macro:A,B) from entity_scores' keys."""
    from ..training.config import checkpoint_metric_labels

    labels = checkpoint_metric_labels(name)
    if name == "val_f1":
        return scores["f1"]
    return sum(scores[f"label_{t}_f1"] for t in labels) / len(labels)


def score_checkpoints(run_dir: Path, receipts, batch_size: int = 16, say=lambda *_: None) -> list[dict]:
    """Every checkpoint-* of a run, and its best/, scored on `receipts` with the run's recipe settings;
    each row carries the F1 the run recorded at that step, to compare."""
    import transformers

    from ..metrics import entity_scores
    from ..model import load_trained
    from ..training.artifacts import RunFile
    from .predict import reference_tags
    from .tagger import ReceiptTagger

    transformers.utils.logging.disable_progress_bar()  # one "Loading weights" bar per checkpoint otherwise
    run = RunFile.load(run_dir / "run.json").data
    cfg = run.get("config") or {}
    metric_name = cfg.get("checkpoint_metric", "val_f1")
    recorded = {e["step"]: e for e in run.get("epoch_metrics", [])}
    best_step = (run.get("summary") or {}).get("best_step")
    dirs = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    dirs += [run_dir / "best"] if (run_dir / "best" / "config.json").is_file() else []
    rows = []
    for d in dirs:
        say(f"scoring {d.name}")
        tokenizer, model = load_trained(d)
        tagger = ReceiptTagger(model, tokenizer, cfg, batch_size=batch_size)
        true, _ = reference_tags(tagger, receipts)
        scores = entity_scores(true, [p.tags for p in tagger.predict_receipts(receipts)], tagger.labels)
        step = best_step if d.name == "best" else int(d.name.split("-")[-1])
        entry = recorded.get(step, {})
        rows.append(
            {
                "checkpoint": d.name,
                "step": step,
                "epoch": entry.get("epoch"),
                "f1": scores["f1"],
                "precision": scores["precision"],
                "recall": scores["recall"],
                "metric_name": metric_name,
                "metric": checkpoint_metric_value(scores, metric_name),
                "recorded_f1": entry.get("val_f1"),
            }
        )
    return rows
