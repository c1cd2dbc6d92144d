"""`layoutlm-cli train`."""

from __future__ import annotations

import click
from rich.text import Text

from .common import aws_options, console, job_store_option
from .options import train_config, train_options


@click.command()
@train_options()
@job_store_option
@aws_options
@click.option("--resume", is_flag=True, help="Continue the job in --output-dir from its latest checkpoint.")
@click.option("--overwrite-output-dir", is_flag=True, help="Delete what --output-dir holds first.")
def train(job_store, aws, resume, overwrite_output_dir, **settings):
    """Train a LayoutLM token classifier and record the run as a job."""
    from ..store import resolve_store_uri
    from ..training.run import run_training

    cfg = train_config(settings)
    summary = run_training(
        cfg,
        store_uri=resolve_store_uri(job_store, cfg.dynamo_table),
        aws=aws,
        resume=resume,
        overwrite_output_dir=overwrite_output_dir,
        say=console.print,
    )
    if summary.get("job_id"):
        console.print(Text.assemble(("succeeded", "bold green"), f" job {summary['job_id']} ({cfg.job_name})"))
        console.print(
            f"best val F1 {summary['best_f1']:.4f} (P {summary['best_precision']:.4f}, "
            f"R {summary['best_recall']:.4f}) at epoch {summary['best_epoch']}"
            + (
                f", chosen by {summary['best_metric_name']} {summary['best_metric']:.4f}"
                if summary["best_metric_name"] != "val_f1"
                else ""
            )
        )
        console.print(f"best model: {summary['best_dir']}")
