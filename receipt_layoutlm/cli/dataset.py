"""`layoutlm-cli dataset stats` and `dataset convert` (import and export are in aws.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from ..errors import UserError
from .common import aws_options, console
from .options import train_config, train_options


@click.group()
def dataset():
    """Look at, import and export receipt datasets."""


@dataset.command("stats")
@train_options(
    only=(
        "dataset",
        "dynamo_table",
        "label_status",
        "merge_amounts",
        "allowed_labels",
        "o_entity_ratio",
        "val_ratio",
        "split_by",
        "val_keys",
        "seed",
    )
)
@aws_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dataset_stats(aws, as_json, **settings):
    """Receipts, words and labels before/after merges and the whitelist, and the O:entity ratio."""
    from ..training.data import prepare_config_data

    cfg = train_config(settings, job_name="stats")
    if cfg.dataset is None and not cfg.dynamo_table:
        raise UserError(
            "Pass --dataset FILE.jsonl|wildreceipt:FILE|sroie:DIR|cord:DIR|funsd:DIR|demo[:N] or --dynamo-table TABLE."
        )
    data, report = prepare_config_data(cfg, aws)
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
        "split": data.split,
        "thinning": data.thinning,
        "dropped_by_reader": data.dropped,
    }
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    console.print(
        Text.assemble(
            (report.source, "bold"),
            f": {stats['receipts']} receipts, {stats['words']} words "
            f"({c['train']['receipts']} train / {c['val']['receipts']} val receipts, seed {cfg.seed})",
        )
    )
    table = Table("label", "words before", "words after")
    for name in sorted(set(c["labels_before"]) | set(c["labels_after"])):
        table.add_row(name, str(c["labels_before"].get(name, "")), str(c["labels_after"].get(name, "")))
    console.print(table)
    t = data.thinning
    if t["ratio_before"] is not None:
        line = f"training O:entity ratio {t['ratio_before']:.2f}"
        if cfg.o_entity_ratio:
            line += (
                f" -> {t['ratio_after']:.2f} with --o-entity-ratio {cfg.o_entity_ratio} ({t['lines_dropped']} lines)"
            )
        console.print(line)
    split = data.split
    if split["by"] == "val_keys":
        console.print(
            f"validation pinned by --val-keys (sha256 {split['val_keys_sha256'][:12]}); "
            f"{split['val_keys_not_in_data']} of {split['val_keys_count']} ids are not in the data",
            highlight=False,
        )
    else:
        console.print(
            f"split by {split['by']}: {split['groups']['train']} train / {split['groups']['val']} val groups",
            highlight=False,
        )
    for reason, n in data.dropped.items():
        console.print(f"dropped {n}: {reason}")


@dataset.command("convert")
@click.argument("source")
@click.argument("output", type=click.Path(path_type=Path))
def dataset_convert(source, output):
    """Write any --dataset source (sroie:DIR, cord:DIR, funsd:DIR, wildreceipt:FILE, ...) as our JSONL."""
    from ..sources import load_receipts
    from ..sources.jsonl import write_jsonl

    receipts, report = load_receipts(source)
    if not receipts:
        raise UserError(f"{source} holds no receipt with words; nothing written.")
    write_jsonl(receipts, output)
    labelled = sum(w.label != "O" for r in receipts for w in r.words)
    words = sum(len(r.words) for r in receipts)
    console.print(f"{len(receipts)} receipts, {words} words ({labelled} labelled) -> {output}", highlight=False)
    for reason, n in report.dropped.items():
        console.print(f"{reason}: {n}", highlight=False)
