"""The AWS commands of `layoutlm-cli`: `dynamo create-table`, `dataset export` and `dataset import`.

`register(cli)` adds them to the main command group (receipt_layoutlm/cli/__init__.py).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from .common import aws_options, console, dynamo_table_option

dynamo_table_required = dynamo_table_option(required=True)


def register(cli: click.Group) -> None:
    dataset = _group(cli, "dataset", "Look at, import and export receipt datasets.")
    dataset.add_command(dataset_export, "export")
    dataset.add_command(dataset_import, "import")
    dynamo = _group(cli, "dynamo", "Manage the DynamoDB receipts table.")
    dynamo.add_command(dynamo_create_table, "create-table")


def _group(cli: click.Group, name: str, help_text: str) -> click.Group:
    """The existing sub-group of that name, else a new one (the main CLI may define it already)."""
    group = cli.commands.get(name)
    if not isinstance(group, click.Group):
        group = click.Group(name, help=help_text)
        cli.add_command(group)
    return group


@click.command()
@click.argument("table")
@aws_options
def dynamo_create_table(table, aws):
    """Create TABLE with the receipts schema (PK/SK, GSI1-GSI4, GSITYPE, on-demand billing)."""
    from ..store.dynamodb import create_table

    created = create_table(table, aws)
    console.print(
        Text.assemble(
            "Created DynamoDB table ", (table, "bold"), f" in {created.region} ({created.client.meta.endpoint_url})."
        )
    )


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@dynamo_table_required
@click.option(
    "--label-status",
    multiple=True,
    default=["VALID"],
    show_default=True,
    help="Validation status of the word labels to export (repeatable).",
)
@aws_options
def dataset_export(out, dynamo_table, label_status, aws):
    """Write the labelled receipts of a DynamoDB table to OUT (JSON Lines dataset format)."""
    from ..sources.dynamodb import load_dynamo_receipts
    from ..sources.jsonl import write_jsonl

    receipts, report = load_dynamo_receipts(dynamo_table, aws, statuses=tuple(label_status))
    write_jsonl(receipts, out)
    words = [w for r in receipts for w in r.words]
    counts: dict[str, int] = {}
    for w in words:
        if w.label != "O":
            counts[w.label] = counts.get(w.label, 0) + 1
    console.print(
        f"Wrote {len(receipts)} receipts, {len(words)} words ({sum(counts.values())} labelled) "
        f"from dynamodb://{dynamo_table} to {out}",
        highlight=False,
    )
    if counts:
        table = Table("label", "words")
        for name, n in sorted(counts.items()):
            table.add_row(name, str(n))
        console.print(table)
    _print_dropped(report.dropped)


@click.command()
@click.argument("source")
@dynamo_table_required
@aws_options
def dataset_import(source, dynamo_table, aws):
    """Write the receipts of SOURCE (FILE.jsonl, wildreceipt:FILE or demo:N) into a DynamoDB table."""
    from ..sources import load_receipts
    from ..sources.dynamodb import import_receipts

    receipts, report = load_receipts(source)
    counts = import_receipts(receipts, dynamo_table, aws)
    console.print(
        f"Imported {counts['receipts']} receipts, {counts['lines']} lines, {counts['words']} words and "
        f"{counts['labels']} VALID labels from {source} into dynamodb://{dynamo_table}",
        highlight=False,
    )
    _print_dropped(report.dropped)


def _print_dropped(dropped: dict[str, int]) -> None:
    """What the reader skipped or decided (e.g. words with several labels), with counts."""
    for reason, n in sorted(dropped.items()):
        console.print(f"  {reason}: {n}", highlight=False)
