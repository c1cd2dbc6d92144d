"""`layoutlm-cli submit`, `worker` and `resume`: jobs queued in the job store, run by workers.

`submit` takes exactly the flags of `train` (its parameters are reused, not copied by hand) and checks
them as `train` does before writing anything; a worker then runs the job through the same
run_training. See docs/operations.md.
"""

from __future__ import annotations

import os
import socket
import sys

import click
from rich.text import Text

from ..errors import UserError
from ..fleet.imds import DEFAULT_ENDPOINT
from ..fleet.queue import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE
from ..store import DEFAULT_LEASE_SECONDS
from .common import aws_options, console, dynamo_table_option, job_store_option
from .options import train_config, train_options
from .sagemaker import sagemaker_options, submit_to_sagemaker

QUEUE_HELP = "Queue name (a Queue item in the job store)."


def check_submittable(cfg, aws) -> dict | None:
    """Everything `train` would refuse, refused now, before the job is written: flags, labels, and that
    the data can be read and gives something to train on. Returns the split of a --dataset."""
    from ..training.config import check_config
    from ..training.data import prepare_config_data

    check_config(cfg)
    split = None
    if cfg.dataset is not None:
        split = prepare_config_data(cfg, aws)[0].split
    else:
        from ..store.dynamodb import DynamoTable

        DynamoTable(cfg.dynamo_table, aws)._ensure_table()
    if cfg.output_s3_uri:
        from ..s3 import S3Sync

        S3Sync(cfg.output_s3_uri, cfg.job_name, aws).check()
    return split


@click.command()
@train_options()
@job_store_option
@aws_options
@click.option("--queue", default=DEFAULT_QUEUE, show_default=True, help=QUEUE_HELP)
@sagemaker_options
def submit(job_store, aws, queue, backend, sagemaker, **settings):
    """Queue a training job (the same flags as `train`) for a `worker`, or start it as a SageMaker training
    job (--backend sagemaker); prints its job id."""
    from ..fleet.queue import submit as submit_job
    from ..s3 import S3Sync
    from ..store import open_store, resolve_store_uri
    from ..training.run import config_record

    cfg = train_config(settings)
    if sagemaker is not None:
        return submit_to_sagemaker(cfg, sagemaker, job_store, aws)
    split = check_submittable(cfg, aws)
    store = open_store(resolve_store_uri(job_store, cfg.dynamo_table), aws)
    job = submit_job(
        store,
        cfg.job_name,
        config_record(cfg, resume=False, split=split),
        queue,
        description=cfg.description,
        priority=cfg.priority,
        storage=S3Sync(cfg.output_s3_uri, cfg.job_name, aws).storage if cfg.output_s3_uri else None,
    )
    console.print(f"queued {cfg.job_name} on {queue} in {store.description}; job id:", highlight=False)
    click.echo(job.job_id)


@click.command()
@job_store_option
@dynamo_table_option()
@aws_options
@click.option("--queue", default=DEFAULT_QUEUE, show_default=True, help=QUEUE_HELP)
@click.option("--gpus", help="Comma-separated GPU ids, e.g. 0,1: one job per GPU in parallel.")
@click.option(
    "--cpu-slots",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Without --gpus: jobs run at once on the CPU, each with its share of the cores.",
)
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after starting this many jobs (and finishing them).")
@click.option("--idle-exit", type=click.FloatRange(min=0), help="Exit after this many seconds with nothing to do.")
@click.option(
    "--lease",
    type=click.IntRange(min=1),
    default=DEFAULT_LEASE_SECONDS,
    show_default=True,
    help="Seconds without a heartbeat after which a running job of another host counts as stale.",
)
@click.option("--poll", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Seconds between claims.")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_ATTEMPTS,
    show_default=True,
    help="A job whose run died this many times is marked failed instead of requeued.",
)
@click.option(
    "--imds-endpoint",
    envvar="LAYOUTLM_IMDS_ENDPOINT",
    default=DEFAULT_ENDPOINT,
    show_default=True,
    help="EC2 instance metadata service (instance id, spot notices); tests point it at a fake.",
)
@click.option(
    "--spot-poll",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between looks at IMDS for a spot interruption notice (on EC2 only).",
)
def worker(job_store, dynamo_table, aws, gpus, **settings):
    """Run queued jobs from the job store until stopped (SIGTERM/SIGINT, spot notice, --idle-exit, --max-jobs)."""
    from ..fleet.worker import Worker, WorkerSettings
    from ..store import resolve_store_uri

    gpu_list = [g.strip() for g in (gpus or "").split(",") if g.strip()]
    if gpus is not None and not gpu_list:
        raise UserError(f"--gpus {gpus!r} names no GPU; pass ids such as --gpus 0,1.")
    if gpu_list and settings["cpu_slots"] > 1:
        raise UserError("--cpu-slots is for workers without GPUs; with --gpus each GPU runs one job.")
    store_uri = resolve_store_uri(job_store, dynamo_table)
    Worker(WorkerSettings(store_uri=store_uri, gpus=gpu_list, aws=aws, **settings), say=console.print).run()


@click.command()
@click.argument("ref")
@job_store_option
@dynamo_table_option()
@aws_options
def resume(ref, job_store, dynamo_table, aws):
    """Continue an interrupted, stale or queued job here, from its newest checkpoint (output dir, else S3)."""
    from ..fleet.queue import claim, dequeue
    from ..fleet.worker import run_job
    from ..store import ConditionFailed, open_store, resolve_store_uri

    store_uri = resolve_store_uri(job_store, dynamo_table)
    store = open_store(store_uri, aws)
    job = store.resolve(ref)
    if not (job.status in ("interrupted", "pending") or (job.status == "running" and job.is_stale())):
        raise UserError(
            f"Job {job.name} ({job.job_id}) is {job.status}"
            + (" and its process is alive" if job.status == "running" else "")
            + "; only an interrupted, stale or pending job can be resumed."
        )
    host = socket.gethostname()
    try:
        claim(store, job, f"{host}/{os.getpid()}", host, job.lease_seconds or DEFAULT_LEASE_SECONDS, job.status)
    except ConditionFailed:
        raise UserError(
            f"Job {job.job_id} changed while resuming it (a worker took it?); look at `jobs show`."
        ) from None
    if job.queue:
        dequeue(store, job)
    code = run_job(store_uri, job.job_id, aws, say=console.print)
    if code:
        sys.exit(code)
    console.print(Text.assemble(("succeeded", "bold green"), f" job {job.job_id} ({job.name})"))
