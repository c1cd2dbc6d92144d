"""`layoutlm-cli propose` and `layoutlm-cli dataset suggest`: the model helps grow the labelled data.

`register(cli)` adds them (suggest into the `dataset` group).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ..inference.propose import AMOUNT_CHOICES, PROPOSE_STATUSES
from .common import aws_options, console, job_store_option

model_option = click.option(
    "--model",
    "model_ref",
    help="A run's best/ folder, an `export --onnx` folder, or a job name or id (its best/, local or from S3).",
)
table_option = click.option(
    "--dynamo-table", envvar="DYNAMO_TABLE_NAME", required=True, help="The receipts table ($DYNAMO_TABLE_NAME)."
)


def resolve_model(model_ref, job_store, dynamo_table, aws) -> Path:
    """--model as a folder; a job name/id is looked up in the job store (by default the --dynamo-table)."""
    from ..inference.resolve import resolve_model_dir
    from ..store import open_store, resolve_store_uri

    return resolve_model_dir(model_ref, lambda: open_store(resolve_store_uri(job_store, dynamo_table), aws), aws=aws)


def register(cli: click.Group) -> None:
    cli.add_command(propose)
    cli.commands["dataset"].add_command(suggest, "suggest")


@click.command()
@model_option
@table_option
@click.option(
    "--receipts",
    type=click.Choice(["unlabelled", "all"]),
    default="unlabelled",
    show_default=True,
    help="unlabelled: receipts with words but no VALID label.",
)
@click.option("--image-id", help="Only this receipt (with --receipt-id).")
@click.option("--receipt-id", type=int, help="Receipt number within --image-id.")
@click.option("--limit", type=int, help="At most this many receipts (in image-id order).")
@click.option("--status", type=click.Choice(PROPOSE_STATUSES), default="PENDING", show_default=True)
@click.option("--min-confidence", type=float, default=0.0, show_default=True, help="Skip words below it.")
@click.option(
    "--amount-label",
    type=click.Choice(AMOUNT_CHOICES),
    help="For --merge-amounts models: the table label AMOUNT is written as, or skip.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be written; write nothing.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@job_store_option
@aws_options
def propose(
    model_ref,
    dynamo_table,
    receipts,
    image_id,
    receipt_id,
    limit,
    status,
    min_confidence,
    amount_label,
    dry_run,
    batch_size,
    job_store,
    aws,
):
    """Write the model's labels into the table as PENDING ReceiptWordLabels, for validation."""
    from ..errors import UserError
    from ..inference.propose import propose_labels

    if model_ref is None:
        raise UserError("Pass --model with a run's best/ folder, an `export --onnx` folder or a job name/id.")
    model_dir = resolve_model(model_ref, job_store, dynamo_table, aws)

    def show(proposals):
        if dry_run:
            for p in proposals:
                console.print(
                    f"would write {p.receipt} line {p.line_id} word {p.word_id} {p.text!r}: {p.label} "
                    f"({p.confidence:.3f})",
                    highlight=False,
                )

    s = propose_labels(
        model_dir,
        dynamo_table,
        receipts,
        image_id,
        receipt_id,
        limit,
        status,
        min_confidence,
        amount_label,
        dry_run,
        batch_size,
        aws=aws,
        on_proposals=show,
    )
    verb = "would write" if dry_run else "written"
    console.print(
        f"{s.receipts} receipts, {s.words} words: {s.proposed} labels proposed, {s.written} {verb}, "
        f"{s.skipped_existing} skipped (already in the table), {s.below_confidence} below --min-confidence"
        + (f", {s.skipped_amount} AMOUNT words skipped" if s.skipped_amount else ""),
        highlight=False,
    )
    for reason, n in s.dropped.items():
        console.print(f"dropped {n}: {reason}", highlight=False)


@click.command()
@model_option
@table_option
@click.option("-n", "n", type=int, default=50, show_default=True, help="How many receipts to name.")
@click.option("--by", type=click.Choice(["uncertainty", "random"]), default="uncertainty", show_default=True)
@click.option("--per-merchant", type=int, default=2, show_default=True, help="At most this many per merchant.")
@click.option("--seed", type=int, default=42, show_default=True, help="For --by random.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@job_store_option
@aws_options
def suggest(model_ref, dynamo_table, n, by, per_merchant, seed, as_json, batch_size, job_store, aws):
    """Name the unlabelled receipts to label next, most informative first."""
    from ..inference.suggest import suggest_receipts

    model_dir = resolve_model(model_ref, job_store, dynamo_table, aws) if model_ref else None
    rows = suggest_receipts(model_dir, dynamo_table, n, by, per_merchant, seed, batch_size, aws=aws)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("#", "image id", "receipt", "reason")
    for k, row in enumerate(rows, start=1):
        table.add_row(str(k), row["image_id"], str(row["receipt_id"]), row["reason"])
    console.print(table)
