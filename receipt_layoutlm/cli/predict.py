"""`layoutlm-cli predict`."""

from __future__ import annotations

from pathlib import Path

import click

from .common import console, with_store_opener


@click.command()
@click.option("--model", "model_ref", required=True, help="A run's best/ folder, or a job name or id (its best/).")
@click.option(
    "--dataset", "spec", required=True, help="FILE.jsonl, wildreceipt:FILE, sroie:DIR, cord:DIR, funsd:DIR or demo[:N]."
)
@click.option(
    "--output", type=click.Path(path_type=Path), help="Write predictions as JSONL: our dataset format plus entities."
)
@click.option("--batch-size", type=int, default=16, show_default=True)
@with_store_opener
def predict(model_ref, spec, output, batch_size, open_store, aws):
    """Label the words of receipts and list their entities; scores them when the data has labels."""
    from ..inference.predict import predict_receipts

    summary = predict_receipts(model_ref, spec, output, batch_size, open_store, aws)
    console.print(
        f"{summary['receipts']} receipts, {summary['words']} words labelled, {summary['entities']} entities"
        + (f" -> {output}" if output else ""),
        highlight=False,
    )
    if summary.get("f1") is not None:
        console.print(
            f"entity F1 {summary['f1']:.4f} (P {summary['precision']:.4f}, R {summary['recall']:.4f}) "
            "against the labels in the data",
            highlight=False,
        )
