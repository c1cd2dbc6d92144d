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
@click.option("--model", "model_ref", required=True, help="A run's best/ folder, or a job name or id (its best/).")
@click.option(
    "--dataset", "spec", required=True, help="Labelled receipts: FILE.jsonl, wildreceipt:FILE, sroie:DIR, ..."
)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (everything but the per-receipt list).")
@click.option("--per-receipt", type=click.Path(path_type=Path), help="Write each receipt's errors as JSONL.")
@with_store_opener
def evaluate(model_ref, spec, batch_size, as_json, per_receipt, open_store, aws):
    """Entity-level P/R/F1 (micro, macro, per label), word confusion matrix and the receipts with most errors."""
    from ..errors import UserError
    from ..inference.evaluate import evaluate_model
    from ..inference.predict import load_data, load_tagger
    from ..training.artifacts import atomic_write_text

    tagger, model_dir = load_tagger(model_ref, open_store, batch_size, aws)
    receipts, report = load_data(spec)
    result = evaluate_model(tagger, receipts)
    if not result["entities"]:
        raise UserError(
            f"The dataset {spec} has no labelled entity after the model's merges and whitelist; "
            "evaluate needs labelled receipts (use `predict` for unlabelled ones)."
        )
    if per_receipt:
        rows = [json.dumps(e, ensure_ascii=False) for e in result["per_receipt"]]
        atomic_write_text(per_receipt, "\n".join(rows) + "\n")
    result = {"model": str(model_dir), "dataset": spec, "dropped_by_reader": report.dropped, **result}
    result.pop("per_receipt")
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
    if result["unknown_labels"]:
        console.print(
            "labels in the data that the model never learned (scored as missed): "
            + ", ".join(f"{k} ({v})" for k, v in result["unknown_labels"].items()),
            highlight=False,
        )
    if per_receipt:
        console.print(f"per-receipt errors -> {per_receipt}", highlight=False)
