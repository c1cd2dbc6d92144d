"""`layoutlm-cli dataset stats` (import and export are in aws.py)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from ..errors import UserError
from .common import _aws_options, _export_aws, console, dynamo_table_option


@click.group()
def dataset():
    """Look at, import and export receipt datasets."""


@dataset.command("stats")
@click.option("--dataset", "spec", help="FILE.jsonl, wildreceipt:FILE or demo[:N]; without it, --dynamo-table.")
@dynamo_table_option
@click.option("--label-status", multiple=True, default=["VALID"], show_default=True)
@_aws_options
@click.option("--merge-amounts", is_flag=True)
@click.option("--allowed-label", "allowed_labels", multiple=True)
@click.option("--o-entity-ratio", type=float)
@click.option("--val-ratio", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dataset_stats(
    spec,
    dynamo_table,
    label_status,
    region,
    endpoint_url,
    merge_amounts,
    allowed_labels,
    o_entity_ratio,
    val_ratio,
    seed,
    as_json,
):
    """Receipts, words and labels before/after merges and the whitelist, and the O:entity ratio."""
    from ..training.data import load_source, prepare_data

    _export_aws(region, endpoint_url)
    if spec is None and not dynamo_table:
        raise UserError("Pass --dataset FILE.jsonl|wildreceipt:FILE|demo[:N] or --dynamo-table TABLE.")
    receipts, report = load_source(spec, dynamo_table, label_status, seed)
    data = prepare_data(
        receipts,
        report,
        merge_amounts=merge_amounts,
        allowed_labels=allowed_labels,
        val_ratio=val_ratio,
        o_entity_ratio=o_entity_ratio,
        seed=seed,
    )
    c = data.counts
    stats = {
        "source": report.source,
        "receipts": c["receipts"],
        "words": c["train"]["words"] + c["val"]["words"],
        "labels_before": c["labels_before"],
        "labels_after": c["labels_after"],
        "label_list": data.label_list,
        "train": c["train"],
        "val": c["val"],
        "thinning": data.thinning,
        "dropped_by_reader": data.dropped,
    }
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    console.print(
        f"[bold]{report.source}[/]: {stats['receipts']} receipts, {stats['words']} words "
        f"({c['train']['receipts']} train / {c['val']['receipts']} val receipts, seed {seed})"
    )
    table = Table("label", "words before", "words after")
    for name in sorted(set(c["labels_before"]) | set(c["labels_after"])):
        table.add_row(name, str(c["labels_before"].get(name, "")), str(c["labels_after"].get(name, "")))
    console.print(table)
    t = data.thinning
    if t["ratio_before"] is not None:
        line = f"training O:entity ratio {t['ratio_before']:.2f}"
        if o_entity_ratio:
            line += f" -> {t['ratio_after']:.2f} with --o-entity-ratio {o_entity_ratio} ({t['lines_dropped']} lines)"
        console.print(line)
    for reason, n in data.dropped.items():
        console.print(f"dropped {n}: {reason}")
