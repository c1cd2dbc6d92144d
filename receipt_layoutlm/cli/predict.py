"""`layoutlm-cli predict`."""

from __future__ import annotations

from pathlib import Path

import click

from .common import console


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="A run's best/ folder.")
@click.option("--dataset", "spec", required=True, help="FILE.jsonl, wildreceipt:FILE or demo[:N].")
@click.option("--output", type=click.Path(path_type=Path), help="Write predictions as JSONL (our dataset format).")
@click.option("--batch-size", type=int, default=16, show_default=True)
def predict(model_dir, spec, output, batch_size):
    """Label the words of receipts with a trained model; scores them when the data has labels."""
    from ..inference.predict import predict_receipts

    summary = predict_receipts(model_dir, spec, output, batch_size)
    console.print(
        f"{summary['receipts']} receipts, {summary['words']} words labelled" + (f" -> {output}" if output else "")
    )
    if summary.get("f1") is not None:
        console.print(
            f"entity F1 {summary['f1']:.4f} (P {summary['precision']:.4f}, R {summary['recall']:.4f}) "
            "against the labels in the data"
        )
