"""`layoutlm-cli train`."""

from __future__ import annotations

import click

from .common import _aws_options, _export_aws, _store_uri, console, dynamo_table_option, job_store_option


@click.command()
@click.option("--job-name", required=True, help="Name of the run; output goes to /tmp/receipt_layoutlm/<job-name>/.")
@click.option("--dataset", help="FILE.jsonl, wildreceipt:FILE or demo[:N]; without it, --dynamo-table is read.")
@dynamo_table_option
@click.option(
    "--label-status",
    multiple=True,
    default=["VALID"],
    show_default=True,
    help="Validation status of DynamoDB labels to train on (repeatable).",
)
@job_store_option
@_aws_options
@click.option("--output-dir", help="Where run.json, checkpoints and best/ go.")
@click.option(
    "--output-s3-uri",
    envvar="LAYOUTLM_TRAINING_BUCKET",
    help="s3://bucket/prefix to sync run.json, checkpoints and best/ to.",
)
@click.option(
    "--pretrained",
    default="microsoft/layoutlm-base-uncased",
    show_default=True,
    help="Hub name, local model directory, `minilm` (offline) or `tiny` (tests).",
)
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Per device.")
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option(
    "--warmup-ratio",
    type=float,
    default=0.0,
    show_default=True,
    help="Linear warm-up over this fraction of all steps, then linear decay.",
)
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--gradient-accumulation-steps", type=int, default=1, show_default=True)
@click.option("--o-entity-ratio", type=float, help="Thin all-O lines of the training split to about R x entity words.")
@click.option("--merge-amounts", is_flag=True, help="LINE_TOTAL, SUBTOTAL, TAX, GRAND_TOTAL become AMOUNT.")
@click.option("--allowed-label", "allowed_labels", multiple=True, help="Keep only these labels (repeatable).")
@click.option("--early-stopping-patience", type=int, help="Stop after N evaluations without a better val F1.")
@click.option("--val-ratio", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--example-unit",
    type=click.Choice(["receipt", "line"]),
    default="receipt",
    show_default=True,
    help="Whole receipts in overlapping windows, or one OCR line per example (the old tool's way).",
)
@click.option("--max-seq-length", type=int, default=512, show_default=True)
@click.option("--window-overlap", type=int, default=128, show_default=True, help="Sub-tokens shared by windows.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 on a GPU that has it (else fp16) and on a CPU with native bf16 "
    "(AVX512-BF16, AMX-BF16, ARM BF16), else fp32. fp16 needs a GPU. See docs/benchmarks.md.",
)
@click.option("--num-workers", type=int, default=0, show_default=True, help="Data loader worker processes.")
@click.option("--save-total-limit", type=int, default=2, show_default=True, help="Checkpoints kept (best kept too).")
@click.option("--max-steps", type=int, default=-1, help="Stop after this many optimiser steps (smoke tests).")
@click.option("--description", default="")
@click.option("--priority", type=click.Choice(["low", "medium", "high", "critical"]), default="medium")
@click.option("--resume", is_flag=True, help="Continue the job in --output-dir from its latest checkpoint.")
@click.option("--overwrite-output-dir", is_flag=True, help="Delete what --output-dir holds first.")
def train(job_store, region, endpoint_url, resume, overwrite_output_dir, allowed_labels, label_status, **flags):
    """Train a LayoutLM token classifier and record the run as a job."""
    from ..training.config import TrainConfig
    from ..training.run import run_training

    _export_aws(region, endpoint_url)
    cfg = TrainConfig(allowed_labels=list(allowed_labels), label_status=list(label_status), **flags)
    summary = run_training(
        cfg,
        store_uri=_store_uri(job_store, cfg.dynamo_table),
        resume=resume,
        overwrite_output_dir=overwrite_output_dir,
        say=console.print,
    )
    if summary.get("job_id"):
        console.print(f"[bold green]succeeded[/] job {summary['job_id']} ({cfg.job_name})")
        console.print(
            f"best val F1 {summary['best_f1']:.4f} (P {summary['best_precision']:.4f}, "
            f"R {summary['best_recall']:.4f}) at epoch {summary['best_epoch']}"
        )
        console.print(f"best model: {summary['best_dir']}")
