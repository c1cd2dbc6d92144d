"""`layoutlm-cli`: train, inspect jobs, look at datasets, predict.

Every problem the user can fix arrives here as a UserError and is printed as one
sentence with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .errors import UserError
from .store import STATUSES

# Pipes and CI logs get a wide, unwrapped table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class Cli(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            sys.exit(2)


def _aws_options(f):
    """--region/--endpoint-url, handed to boto3 through the variables it already reads."""
    f = click.option("--endpoint-url", envvar="DYNAMODB_ENDPOINT_URL", help="DynamoDB endpoint (local servers).")(f)
    f = click.option("--region", envvar="AWS_REGION", default="us-east-1", show_default=True, help="AWS region.")(f)
    return f


def _export_aws(region: str | None, endpoint_url: str | None) -> None:
    if region:
        os.environ["AWS_REGION"] = region
    if endpoint_url:
        os.environ["DYNAMODB_ENDPOINT_URL"] = endpoint_url


def _store_uri(job_store: str | None, dynamo_table: str | None) -> str | None:
    """--job-store wins; else the seed's habit: --dynamo-table means jobs live in that table."""
    if job_store:
        return job_store
    return f"dynamodb://{dynamo_table}" if dynamo_table else None


job_store_option = click.option(
    "--job-store", envvar="LAYOUTLM_JOB_STORE",
    help="sqlite:///PATH (default: a file in the user data dir) or dynamodb://TABLE.")
dynamo_table_option = click.option("--dynamo-table", envvar="DYNAMO_TABLE_NAME",
                                   help="The receipts table (data and, unless --job-store says otherwise, jobs).")


@click.group(cls=Cli)
@click.version_option(package_name="receipt-layoutlm")
def cli():
    """Train, track and use LayoutLM models that find the fields of receipts."""


@cli.command()
@click.option("--job-name", required=True, help="Name of the run; output goes to /tmp/receipt_layoutlm/<job-name>/.")
@click.option("--dataset", help="FILE.jsonl, wildreceipt:FILE or demo[:N]; without it, --dynamo-table is read.")
@dynamo_table_option
@click.option("--label-status", multiple=True, default=["VALID"], show_default=True,
              help="Validation status of DynamoDB labels to train on (repeatable).")
@job_store_option
@_aws_options
@click.option("--output-dir", help="Where run.json, checkpoints and best/ go.")
@click.option("--output-s3-uri", envvar="LAYOUTLM_TRAINING_BUCKET",
              help="s3://bucket/prefix to sync run.json, checkpoints and best/ to.")
@click.option("--pretrained", default="microsoft/layoutlm-base-uncased", show_default=True,
              help="Hub name, local model directory, `minilm` (offline) or `tiny` (tests).")
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Per device.")
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option("--warmup-ratio", type=float, default=0.0, show_default=True,
              help="Linear warm-up over this fraction of all steps, then linear decay.")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--gradient-accumulation-steps", type=int, default=1, show_default=True)
@click.option("--o-entity-ratio", type=float, help="Thin all-O lines of the training split to about R x entity words.")
@click.option("--merge-amounts", is_flag=True, help="LINE_TOTAL, SUBTOTAL, TAX, GRAND_TOTAL become AMOUNT.")
@click.option("--allowed-label", "allowed_labels", multiple=True, help="Keep only these labels (repeatable).")
@click.option("--early-stopping-patience", type=int, help="Stop after N evaluations without a better val F1.")
@click.option("--val-ratio", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--example-unit", type=click.Choice(["receipt", "line"]), default="receipt", show_default=True,
              help="Whole receipts in overlapping windows, or one OCR line per example (the old tool's way).")
@click.option("--max-seq-length", type=int, default=512, show_default=True)
@click.option("--window-overlap", type=int, default=128, show_default=True, help="Sub-tokens shared by windows.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True)
@click.option("--num-workers", type=int, default=0, show_default=True, help="Data loader worker processes.")
@click.option("--save-total-limit", type=int, default=2, show_default=True, help="Checkpoints kept (best kept too).")
@click.option("--max-steps", type=int, default=-1, help="Stop after this many optimiser steps (smoke tests).")
@click.option("--description", default="")
@click.option("--priority", type=click.Choice(["low", "medium", "high", "critical"]), default="medium")
@click.option("--resume", is_flag=True, help="Continue the job in --output-dir from its latest checkpoint.")
@click.option("--overwrite-output-dir", is_flag=True, help="Delete what --output-dir holds first.")
def train(job_store, region, endpoint_url, resume, overwrite_output_dir, allowed_labels, label_status, **flags):
    """Train a LayoutLM token classifier and record the run as a job."""
    from .train import TrainConfig, run_training

    _export_aws(region, endpoint_url)
    cfg = TrainConfig(allowed_labels=list(allowed_labels), label_status=list(label_status), **flags)
    summary = run_training(cfg, store_uri=_store_uri(job_store, cfg.dynamo_table), resume=resume,
                           overwrite_output_dir=overwrite_output_dir, say=console.print)
    if summary.get("job_id"):
        console.print(f"[bold green]succeeded[/] job {summary['job_id']} ({cfg.job_name})")
        console.print(f"best val F1 {summary['best_f1']:.4f} (P {summary['best_precision']:.4f}, "
                      f"R {summary['best_recall']:.4f}) at epoch {summary['best_epoch']}")
        console.print(f"best model: {summary['best_dir']}")


# --- jobs ------------------------------------------------------------------------------
@cli.group()
def jobs():
    """Look at recorded jobs."""


def with_store(f):
    """--job-store/--dynamo-table/--region/--endpoint-url, handed to the command as one `store`."""

    @functools.wraps(f)
    def wrapper(*args, job_store, dynamo_table, region, endpoint_url, **kwargs):
        from .store import open_store

        _export_aws(region, endpoint_url)
        return f(*args, store=open_store(_store_uri(job_store, dynamo_table)), **kwargs)

    return job_store_option(dynamo_table_option(_aws_options(wrapper)))


def _epochs_of(job) -> str:
    return str(job.results.get("epochs_completed", "")) if job.results else ""


@jobs.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_store
def jobs_list(status, as_json, store):
    """Jobs, oldest first, optionally of one status."""
    found = store.list_jobs(status)
    if as_json:
        click.echo(json.dumps([j.__dict__ for j in found], indent=2, default=str))
        return
    table = Table("job id", "name", "status", "created", "best F1", "epochs")
    table.columns[0].no_wrap = table.columns[3].no_wrap = True
    for j in found:
        f1 = j.results.get("best_f1")
        table.add_row(j.job_id, j.name, j.status, j.created_at[:19].replace("T", " "),
                      f"{f1:.4f}" if isinstance(f1, (int, float)) else "", _epochs_of(j))
    console.print(table)
    console.print(f"{len(found)} job(s) in {store.description}")


@jobs.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@with_store
def jobs_show(ref, as_json, store):
    """One job (by id or name, newest of that name): config, results and per-epoch scores."""
    job = store.resolve(ref)
    per_epoch = epoch_table(store.metrics(job.job_id))
    if as_json:
        click.echo(json.dumps({**job.__dict__, "epochs": per_epoch,
                               "status_history": [{k: s.get(k) for k in ("status", "updated_at", "message")}
                                                  for s in store.status_history(job.job_id)]},
                              indent=2, default=str))
        return
    console.print(f"[bold]{job.name}[/]  {job.job_id}")
    console.print(f"status {job.status}, created {job.created_at} by {job.created_by}")
    cfg = job.job_config
    keys = ("dataset", "dynamo_table", "pretrained", "epochs", "batch_size", "lr", "warmup_ratio", "label_smoothing",
            "o_entity_ratio", "merge_amounts", "allowed_labels", "early_stopping_patience", "example_unit", "seed")
    console.print("config: " + ", ".join(f"{k}={cfg[k]}" for k in keys if cfg.get(k) not in (None, [], "")))
    if job.results:
        r = job.results
        console.print(f"best val F1 {r.get('best_f1', 0):.4f} at epoch {r.get('best_epoch')}, "
                      f"runtime {r.get('train_runtime')} s, best/ at {r.get('best_dir')}")
    if job.storage:
        console.print(f"S3: s3://{job.storage.get('bucket')}/{job.storage.get('run_root_prefix')}")
    table = Table("epoch", "step", "val F1", "precision", "recall", "eval loss")
    for row in per_epoch:
        table.add_row(*(f"{row.get(k):.4f}" if isinstance(row.get(k), float) else str(row.get(k, ""))
                        for k in ("epoch", "step", "val_f1", "val_precision", "val_recall", "eval_loss")))
    console.print(table)


def epoch_table(metrics: list[dict]) -> list[dict]:
    """Evaluation metrics grouped by (epoch, step), in order."""
    rows: dict[tuple, dict] = {}
    for m in metrics:
        if m["metric_name"] in ("val_f1", "val_precision", "val_recall", "eval_loss"):
            key = (m.get("epoch"), m.get("step"))
            rows.setdefault(key, {"epoch": key[0], "step": key[1]})[m["metric_name"]] = m["value"]
    return sorted(rows.values(), key=lambda r: (r["step"] or 0, r["epoch"] or 0))


@jobs.command("metrics")
@click.argument("ref")
@click.option("--name", help="One metric, e.g. val_f1 or label_DATE_f1.")
@click.option("--json", "as_json", is_flag=True)
@with_store
def jobs_metrics(ref, name, as_json, store):
    """A job's metrics in time order."""
    job = store.resolve(ref)
    rows = store.metrics(job.job_id, name)
    keep = ("metric_name", "value", "epoch", "step", "unit", "timestamp")
    if as_json:
        click.echo(json.dumps([{k: r.get(k) for k in keep} for r in rows], indent=2, default=str))
        return
    table = Table("metric", "value", "epoch", "step", "unit", "timestamp")
    for r in rows:
        v = r.get("value")
        table.add_row(r["metric_name"], f"{v:.6g}" if isinstance(v, float) else str(v), str(r.get("epoch", "")),
                      str(r.get("step", "")), r.get("unit", ""), r["timestamp"])
    console.print(table)


@jobs.command("report")
@click.argument("ref")
@click.option("--output", type=click.Path(path_type=Path), help="PNG file (default: <job-name>-report.png).")
@with_store
def jobs_report(ref, output, store):
    """Plot a job's validation scores, losses and per-label F1 to a PNG."""
    from .report import plot_job

    job = store.resolve(ref)
    path = plot_job(job, store.metrics(job.job_id), output or Path(f"{job.name}-report.png"))
    console.print(f"wrote {path}")


# --- datasets --------------------------------------------------------------------------
@cli.group()
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
def dataset_stats(spec, dynamo_table, label_status, region, endpoint_url, merge_amounts, allowed_labels,
                  o_entity_ratio, val_ratio, seed, as_json):
    """Receipts, words and labels before/after merges and the whitelist, and the O:entity ratio."""
    from .train import TrainConfig, load_source, prepare_data

    _export_aws(region, endpoint_url)
    cfg = TrainConfig(job_name="stats", dataset=spec, dynamo_table=dynamo_table, label_status=list(label_status),
                      merge_amounts=merge_amounts, allowed_labels=list(allowed_labels),
                      o_entity_ratio=o_entity_ratio, val_ratio=val_ratio, seed=seed)
    if spec is None and not dynamo_table:
        raise UserError("Pass --dataset FILE.jsonl|wildreceipt:FILE|demo[:N] or --dynamo-table TABLE.")
    receipts, report = load_source(cfg)
    data = prepare_data(cfg, receipts, report)
    c = data.counts
    stats = {"source": report.source, "receipts": c["receipts"], "words": c["train"]["words"] + c["val"]["words"],
             "labels_before": c["labels_before"], "labels_after": c["labels_after"], "label_list": data.label_list,
             "train": c["train"], "val": c["val"], "thinning": data.thinning, "dropped_by_reader": data.dropped}
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    console.print(f"[bold]{report.source}[/]: {stats['receipts']} receipts, {stats['words']} words "
                  f"({c['train']['receipts']} train / {c['val']['receipts']} val receipts, seed {seed})")
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


# --- using a model ---------------------------------------------------------------------
@cli.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="A run's best/ folder.")
@click.option("--dataset", "spec", required=True, help="FILE.jsonl, wildreceipt:FILE or demo[:N].")
@click.option("--output", type=click.Path(path_type=Path), help="Write predictions as JSONL (our dataset format).")
@click.option("--batch-size", type=int, default=16, show_default=True)
def predict(model_dir, spec, output, batch_size):
    """Label the words of receipts with a trained model; scores them when the data has labels."""
    from .predict import predict_receipts

    summary = predict_receipts(model_dir, spec, output, batch_size)
    console.print(f"{summary['receipts']} receipts, {summary['words']} words labelled"
                  + (f" -> {output}" if output else ""))
    if summary.get("f1") is not None:
        console.print(f"entity F1 {summary['f1']:.4f} (P {summary['precision']:.4f}, R {summary['recall']:.4f}) "
                      "against the labels in the data")


# The AWS commands (dynamo create-table, dataset import/export) live in their own module;
# registered here so that `cli` is complete for every caller, not only for main().
from .cli_aws import register as _register_aws  # noqa: E402

_register_aws(cli)


def main():
    cli(prog_name="layoutlm-cli")


if __name__ == "__main__":
    main()
