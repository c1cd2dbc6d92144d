"""`layoutlm-cli jobs ...`: look at recorded jobs."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from ..errors import UserError
from ..store import STATUSES
from .common import console, with_store


@click.group()
def jobs():
    """Look at recorded jobs."""


def _status_of(job) -> str:
    """The recorded status, and STALE when its process is gone (see Job.is_stale)."""
    if job.is_stale():
        return f"STALE ({job.status})"
    if job.cancel_requested and job.status == "running":
        return "running (cancel requested)"
    return job.status


def _epochs_of(job) -> str:
    return str(job.results.get("epochs_completed", "")) if job.results else ""


@jobs.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--sweep", "sweep_name", help="Only the trials of this sweep (`layoutlm-cli sweep`).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_store
def jobs_list(status, sweep_name, as_json, store):
    """Jobs, oldest first, optionally of one status or one sweep."""
    found = store.list_jobs(status)
    if sweep_name:
        found = [j for j in found if ((j.job_config or {}).get("sweep") or {}).get("name") == sweep_name]
    if as_json:
        click.echo(json.dumps([j.as_dict() for j in found], indent=2, default=str))
        return
    table = Table("job id", "name", "status", "created", "best F1", "epochs", "worker", "heartbeat")
    table.columns[0].no_wrap = table.columns[3].no_wrap = True
    for j in found:
        f1 = j.results.get("best_f1")
        table.add_row(
            j.job_id,
            j.name,
            _status_of(j),
            j.created_at[:19].replace("T", " "),
            f"{f1:.4f}" if isinstance(f1, (int, float)) else "",
            _epochs_of(j),
            j.worker or j.host or "",
            (j.heartbeat_at or "")[:19].replace("T", " "),
        )
    console.print(table)
    console.print(f"{len(found)} job(s) in {store.description}")


@jobs.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.option("--remote", is_flag=True, help="Add the SageMaker training job's status (a --backend sagemaker job).")
@with_store
def jobs_show(ref, as_json, remote, store, aws):
    """One job (by id or name, newest of that name): config, results and per-epoch scores."""
    from ..inference.contract import describe_validation, validation_of

    job = store.resolve(ref)
    per_epoch = epoch_table(store.metrics(job.job_id))
    remote_info = None
    if remote:
        from ..fleet.sagemaker import describe, reconcile

        remote_info = describe(job, aws)
        job = reconcile(store, job, remote_info)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **job.as_dict(),
                    "validation": validation_of(job),
                    **({"sagemaker": remote_info} if remote_info else {}),
                    "epochs": per_epoch,
                    "status_history": [
                        {k: s.get(k) for k in ("status", "updated_at", "message")}
                        for s in store.status_history(job.job_id)
                    ],
                },
                indent=2,
                default=str,
            )
        )
        return
    console.print(Text.assemble((job.name, "bold"), f"  {job.job_id}"))
    console.print(f"status {_status_of(job)}, created {job.created_at} by {job.created_by}")
    if job.worker or job.host or job.heartbeat_at:
        console.print(
            f"attempt {job.attempts} by {job.worker or '-'} on {job.host or '-'} (pid {job.pid or '-'}), "
            f"last heartbeat {job.heartbeat_at or '-'}",
            highlight=False,
        )
    cfg = job.job_config
    keys = (
        "dataset",
        "dynamo_table",
        "pretrained",
        "epochs",
        "batch_size",
        "lr",
        "warmup_ratio",
        "label_smoothing",
        "o_entity_ratio",
        "merge_amounts",
        "allowed_labels",
        "early_stopping_patience",
        "checkpoint_metric",
        "example_unit",
        "seed",
    )
    console.print("config: " + ", ".join(f"{k}={cfg[k]}" for k in keys if cfg.get(k) not in (None, [], "")))
    groups = cfg.get("split_groups")
    console.print(
        f"validated on: {describe_validation(job)}"
        + (f" ({groups['train']} train / {groups['val']} val groups)" if groups else ""),
        highlight=False,
    )
    if job.results:
        r = job.results
        if r.get("best_metric_name", "val_f1") != "val_f1":
            console.print(f"best {r['best_metric_name']} {r['best_metric']:.4f} chose the checkpoint", highlight=False)
        console.print(
            f"best val F1 {r.get('best_f1', 0):.4f} at epoch {r.get('best_epoch')}, "
            f"runtime {r.get('train_runtime')} s, best/ at {r.get('best_dir')}"
        )
    if job.storage:
        console.print(f"S3: s3://{job.storage.get('bucket')}/{job.storage.get('run_root_prefix')}")
    if remote_info:
        from ..fleet.sagemaker import describe_line

        console.print(describe_line(remote_info), highlight=False)
    table = Table("epoch", "step", "val F1", "precision", "recall", "eval loss")
    for row in per_epoch:
        table.add_row(
            *(
                f"{row.get(k):.4f}" if isinstance(row.get(k), float) else str(row.get(k, ""))
                for k in ("epoch", "step", "val_f1", "val_precision", "val_recall", "eval_loss")
            )
        )
    console.print(table)


def epoch_table(metrics: list[dict]) -> list[dict]:
    """Evaluation metrics grouped by (epoch, step), in order."""
    rows: dict[tuple, dict] = {}
    for m in metrics:
        if m["metric_name"] in ("val_f1", "val_precision", "val_recall", "eval_loss"):
            key = (m.get("epoch"), m.get("step"))
            rows.setdefault(key, {"epoch": key[0], "step": key[1]})[m["metric_name"]] = m["value"]
    return sorted(rows.values(), key=lambda r: (r["step"] or 0, r["epoch"] or 0))


def _cell_value(value) -> str:
    if isinstance(value, dict) and "matrix" in value:  # confusion_matrix: too wide for a cell
        n = len(value["matrix"])
        return f"{n}x{n} matrix (--json, or `jobs report`)"
    return str(value)


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
        table.add_row(
            r["metric_name"],
            f"{v:.6g}" if isinstance(v, float) else _cell_value(v),
            str(r.get("epoch", "")),
            str(r.get("step", "")),
            r.get("unit", ""),
            r["timestamp"],
        )
    console.print(table)


@jobs.command("cancel")
@click.argument("ref")
@with_store
def jobs_cancel(ref, store, aws):
    """Cancel a job (by id or name): a waiting one at once, a running one at its next log (it saves first);
    a SageMaker job's training job is stopped too (StopTrainingJob)."""
    from ..fleet.queue import cancel

    job = store.resolve(ref)
    outcome = cancel(store, job)
    if outcome == "cancelled":
        console.print(f"cancelled job {job.job_id} ({job.name})", highlight=False)
    else:
        console.print(
            f"cancel requested for job {job.job_id} ({job.name}); it saves a checkpoint and ends cancelled "
            "at its next log",
            highlight=False,
        )
    if job.tags.get("backend") == "sagemaker":
        from ..fleet.sagemaker import stop

        console.print(stop(job, aws), highlight=False)


@jobs.command("compare")
@click.argument("refs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_store
def jobs_compare(refs, as_json, store):
    """Jobs side by side (by id or name): the settings that differ, best F1, per-label F1, epochs to best."""
    from ..compare import compare_jobs

    if len(refs) < 2:
        raise UserError("jobs compare needs at least two jobs (ids or names).")
    found = [store.resolve(r) for r in refs]
    result = compare_jobs(store, found)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    rows = result["jobs"]
    table = Table("", *(f"{r['name']}\n{r['job_id'][:8]}" for r in rows))
    for key, values in result["differences"].items():
        table.add_row(key, *("" if v is None else str(v) for v in values))
    if not result["differences"]:
        table.add_row("(settings)", *("same" for _ in rows))
    table.add_section()
    table.add_row("status", *(r["status"] for r in rows))
    for key, label in (("best_f1", "best val F1"), ("best_epoch", "epochs to best"), ("train_runtime", "runtime s")):
        table.add_row(label, *(_cell(r[key]) for r in rows))
    labels = sorted({t for r in rows for t in r["per_label_f1"]})
    if labels:
        table.add_section()
    for t in labels:
        table.add_row(f"F1 {t}", *(_cell(r["per_label_f1"].get(t)) for r in rows))
    console.print(table)
    same = result["same_validation"]
    prints = ", ".join(str(r["validation_fingerprint"] or "unknown") for r in rows)
    if same is None:
        console.print(
            f"validation receipts: not known for every job ({prints}); all were split alike ({rows[0]['validation']})",
            highlight=False,
        )
    elif same:
        console.print(f"validation receipts: the same for all ({prints.split(',')[0]})", highlight=False)
    else:
        how = "; ".join(f"{r['name']}: {r['validation']}" for r in rows)
        console.print(
            f"warning: validated on different receipts ({prints}; {how}); their F1s are not directly comparable, "
            "train them with the same --val-keys to compare",
            style="yellow",
            highlight=False,
        )


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:g}"
    return "" if value is None else str(value)


@jobs.command("report")
@click.argument("ref")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for index.html and the PNGs (default: <job-name>-report/).",
)
@with_store
def jobs_report(ref, output, store):
    """A self-contained HTML page (index.html) and PNGs: learning curves, per-label F1, config, history."""
    from ..report import write_report

    job = store.resolve(ref)
    out = output or Path(f"{job.name}-report")
    index = write_report(job, store.metrics(job.job_id), store.status_history(job.job_id), out)
    console.print(f"wrote {index} and {len(list(out.glob('*.png')))} PNGs", highlight=False)


@jobs.command("flush-journal")
@click.argument("output_dir", type=click.Path(path_type=Path, file_okay=False))
@with_store
def jobs_flush_journal(output_dir, store):
    """Write the journal a run left in OUTPUT_DIR (journal.jsonl: its writes made while the job store was
    unreachable) into the store, in order; items already there are overwritten, not duplicated."""
    from ..errors import UserError
    from ..store.journal import Journal
    from ..training.artifacts import OutputDirClaim, RunFile

    journal = Journal.of(output_dir)
    if not journal.pending:
        console.print(f"{output_dir} holds no journal to flush", highlight=False)
        return
    run = RunFile.load(output_dir / "run.json").data if (output_dir / "run.json").exists() else {}
    if run.get("job_store") and run["job_store"] != store.description:
        raise UserError(
            f"The run in {output_dir} recorded job {run.get('job_id')} in {run['job_store']}, not "
            f"{store.description}; pass --job-store {run['job_store']}."
        )
    claim = OutputDirClaim(output_dir, run.get("job_name", "")).acquire()  # no run may append meanwhile
    try:
        flushed = journal.flush(store)
    finally:
        claim.release()
    console.print(
        f"flushed {flushed.written} journaled write(s) of job {run.get('job_id', '?')} into {store.description}"
        + (f"; {flushed.dropped} status write(s) dropped: the job was moved on meanwhile" if flushed.dropped else ""),
        highlight=False,
    )
