"""`layoutlm-cli evaluate`: a model judged on labelled receipts."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from .common import console, with_store_opener


def _short(items: list[dict], confused: bool = False) -> str:
    """'N: the first three' of a receipt's missed/spurious/confused entities."""
    if not items:
        return ""
    shown = [(f"{e['label']}→{e['predicted']}" if confused else e["label"]) + f" {e['text'][:30]!r}" for e in items[:3]]
    return f"{len(items)}: " + "; ".join(shown) + ("; ..." if len(items) > 3 else "")


@click.command()
@click.option(
    "--model",
    "model_ref",
    required=True,
    help="A run's best/ folder, or a job name or id (its best/); with --all-checkpoints, a run's output folder or job.",
)
@click.option(
    "--dataset",
    "spec",
    help="Labelled receipts: FILE.jsonl, wildreceipt:FILE, sroie:DIR, ... (--all-checkpoints: default the run's).",
)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (everything but the per-receipt list).")
@click.option(
    "--per-receipt",
    type=click.Path(path_type=Path),
    help="Write each receipt's errors as JSONL, and the false positives, most confident first, to OUT.review.jsonl.",
)
@click.option(
    "--all-checkpoints",
    is_flag=True,
    help="Score every checkpoint-* of a run and its best/ on the run's validation receipts (or --val-keys).",
)
@click.option("--val-keys", help="With --all-checkpoints: FILE or s3://bucket/key of receipt ids to score on.")
@with_store_opener
def evaluate(model_ref, spec, batch_size, as_json, per_receipt, all_checkpoints, val_keys, open_store, aws):
    """Entity-level P/R/F1 (micro, macro, per label), word confusion matrix and the receipts with most errors."""
    from ..errors import UserError
    from ..inference.evaluate import evaluate_model
    from ..inference.predict import load_data, load_tagger
    from ..training.artifacts import atomic_write_text

    if all_checkpoints:
        return evaluate_checkpoints(model_ref, spec, val_keys, batch_size, as_json, open_store, aws)
    if val_keys:
        raise UserError("--val-keys goes with --all-checkpoints; to score other receipts, pass them as --dataset.")
    if not spec:
        raise UserError("evaluate needs --dataset (labelled receipts), unless --all-checkpoints scores a run's own.")
    tagger, model_dir = load_tagger(model_ref, open_store, batch_size, aws)
    receipts, report = load_data(spec, aws)
    result = evaluate_model(tagger, receipts)
    if not result["entities"]:
        raise UserError(
            f"The dataset {spec} has no labelled entity after the model's merges and whitelist; "
            "evaluate needs labelled receipts (use `predict` for unlabelled ones)."
        )
    review_file = per_receipt.with_suffix(".review.jsonl") if per_receipt else None
    if per_receipt:
        rows = [json.dumps(e, ensure_ascii=False) for e in result["per_receipt"]]
        atomic_write_text(per_receipt, "\n".join(rows) + "\n")
        queue = [json.dumps(q, ensure_ascii=False) for q in result["review_queue"]]
        atomic_write_text(review_file, "\n".join(queue) + ("\n" if queue else ""))
    result = {"model": str(model_dir), "dataset": spec, "dropped_by_reader": report.dropped, **result}
    result.pop("per_receipt")
    result["review_queue"] = result["review_queue"][:20]
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    m, M = result["micro"], result["macro"]
    console.print(
        f"{spec}: {result['receipts']} receipts, {result['words']} words, {result['entities']} entities; "
        f"model {model_dir}",
        highlight=False,
    )
    console.print(
        f"entity micro P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f}   "
        f"macro P {M['precision']:.4f} R {M['recall']:.4f} F1 {M['f1']:.4f}",
        highlight=False,
    )
    table = Table("label", "precision", "recall", "F1", "support", title="per label (entities)")
    for name, row in result["per_label"].items():
        flag = " (not learned)" if name in result["unknown_labels"] else ""
        table.add_row(
            name + flag, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"])
        )
    console.print(table)
    names, matrix = result["confusion"]["labels"], result["confusion"]["matrix"]
    conf = Table("reference \\ predicted", *names, title="word-level confusion matrix")
    for name, row in zip(names, matrix):
        conf.add_row(name, *(str(v) for v in row))
    console.print(conf)
    worst = Table(
        "receipt", "errors", "word errors", "missed", "spurious", "confused", title="receipts with most errors"
    )
    for e in result["worst_receipts"]:
        worst.add_row(
            e["id"],
            str(e["errors"]),
            str(e["word_errors"]),
            _short(e["missed"]),
            _short(e["spurious"]),
            _short(e["confused"], True),
        )
    console.print(worst)
    review = Table("receipt", "kind", "predicted", "reference", "text", "confidence", title="review queue (top 10)")
    for q in result["review_queue"][:10]:
        review.add_row(
            q["id"],
            q["kind"],
            q.get("predicted", q["label"]),
            q["label"] if q["kind"] == "confused" else "O",
            q["text"][:40],
            f"{q['confidence']:.3f}",
        )
    console.print(review)
    if result["unknown_labels"]:
        console.print(
            "labels in the data that the model never learned (scored as missed): "
            + ", ".join(f"{k} ({v})" for k, v in result["unknown_labels"].items()),
            highlight=False,
        )
    if per_receipt:
        console.print(f"per-receipt errors -> {per_receipt}, review queue -> {review_file}", highlight=False)


def evaluate_checkpoints(model_ref, spec, val_keys, batch_size, as_json, open_store, aws):
    """--all-checkpoints: every checkpoint of a run on its pinned validation receipts."""
    from ..errors import UserError
    from ..inference.evaluate import run_dir_of, score_checkpoints
    from ..inference.predict import load_data
    from ..training.artifacts import RunFile
    from ..training.data import read_val_keys

    run_dir = run_dir_of(model_ref, open_store, aws)
    run = RunFile.load(run_dir / "run.json").data
    spec = spec or (run.get("config") or {}).get("dataset")
    if not spec:
        raise UserError(f"The run in {run_dir} read a DynamoDB table; pass the receipts as --dataset FILE.jsonl.")
    if val_keys:
        keys = read_val_keys(val_keys, aws)
        ids, where = set(keys.ids), f"--val-keys {val_keys} (sha256 {keys.sha256[:12]})"
    else:
        ids, where = set((run.get("split") or {}).get("val_receipt_ids") or []), "the run's validation receipts"
    receipts = [r for r in load_data(spec, aws)[0] if r.id in ids]
    if not receipts:
        raise UserError(f"None of {where} is in {spec}; pass the --dataset the run was trained on.")
    rows = score_checkpoints(run_dir, receipts, batch_size)
    if not rows:
        raise UserError(f"{run_dir} holds no checkpoint-* or best/ to score.")
    if as_json:
        out = {"run_dir": str(run_dir), "dataset": spec, "receipts": len(receipts), "checkpoints": rows}
        click.echo(json.dumps(out, indent=2))
        return
    console.print(f"{run_dir}: {len(receipts)} receipts of {spec}, {where}", highlight=False)
    name = rows[0]["metric_name"]
    table = Table("checkpoint", "step", "epoch", "F1", "P", "R", name, "F1 recorded in training")
    for r in rows:
        recorded = r["recorded_f1"]
        table.add_row(
            r["checkpoint"],
            str(r["step"]),
            str(r["epoch"] if r["epoch"] is not None else ""),
            f"{r['f1']:.4f}",
            f"{r['precision']:.4f}",
            f"{r['recall']:.4f}",
            f"{r['metric']:.4f}",
            f"{recorded:.4f}" if isinstance(recorded, float) else "",
        )
    console.print(table)
