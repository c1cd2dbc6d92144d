"""`submit --backend sagemaker` (its flags and flow) and `layoutlm-cli sagemaker-entrypoint`, the command
the training image runs. See receipt_layoutlm/fleet/sagemaker.py and docs/operations.md."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from ..errors import UserError
from .common import console

SAGEMAKER_FLAGS = (
    "image_uri",
    "role_arn",
    "instance_type",
    "instance_count",
    "volume_gb",
    "max_run",
    "spot",
    "max_wait",
)


def sagemaker_options(f):
    """The flags of `submit --backend sagemaker`, handed to the command as `backend` and `sagemaker`
    (a SageMakerSettings, or None for the queue)."""

    @functools.wraps(f)
    def wrapper(*args, backend, **kwargs):
        values = {name: kwargs.pop(name) for name in SAGEMAKER_FLAGS}
        ctx = click.get_current_context()
        given = [n for n in SAGEMAKER_FLAGS if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if backend != "sagemaker":
            if given:
                flag = "--" + given[0].replace("_", "-")
                raise UserError(f"{flag} is a SageMaker flag; add --backend sagemaker or drop it.")
            return f(*args, backend=backend, sagemaker=None, **kwargs)
        for name in ("image_uri", "role_arn"):
            if not values[name]:
                raise UserError(f"--backend sagemaker needs --{name.replace('_', '-')}.")
        from ..fleet.sagemaker import SageMakerSettings

        return f(*args, backend=backend, sagemaker=SageMakerSettings(**values), **kwargs)

    options = [
        click.option(
            "--backend",
            type=click.Choice(["queue", "sagemaker"]),
            default="queue",
            show_default=True,
            help="queue: a `worker` runs it; sagemaker: a SageMaker training job runs it (docs/operations.md).",
        ),
        click.option("--image-uri", help="SageMaker: the training image in ECR (docker/Dockerfile)."),
        click.option("--role-arn", help="SageMaker: the IAM role the training job runs as."),
        click.option("--instance-type", default="ml.g5.xlarge", show_default=True, help="SageMaker: instance type."),
        click.option(
            "--instance-count", type=click.IntRange(min=1), default=1, show_default=True, help="SageMaker: instances."
        ),
        click.option(
            "--volume-gb",
            type=click.IntRange(min=1),
            default=50,
            show_default=True,
            help="SageMaker: disk per instance.",
        ),
        click.option(
            "--max-run",
            type=click.IntRange(min=1),
            default=24 * 3600,
            show_default=True,
            help="SageMaker: seconds of training before it is stopped (MaxRuntimeInSeconds).",
        ),
        click.option("--spot", is_flag=True, help="SageMaker: managed spot training (needs --max-wait)."),
        click.option(
            "--max-wait",
            type=click.IntRange(min=1),
            help="SageMaker spot: seconds of training plus waiting for capacity (MaxWaitTimeInSeconds, >= --max-run).",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def submit_to_sagemaker(cfg, settings, job_store, aws) -> None:
    """Check as `train` does, write the Job (`pending`), start its training job; prints the job id."""
    from ..fleet.sagemaker import CONTAINER_ROOT, check_settings, launch_training_job
    from ..s3 import S3Sync
    from ..store import open_store, resolve_store_uri
    from ..training.run import config_record
    from .fleet import check_submittable

    store_uri = resolve_store_uri(job_store, cfg.dynamo_table)
    check_settings(settings, cfg, store_uri)
    check_submittable(cfg, aws)
    store = open_store(store_uri, aws)
    record = config_record(cfg, resume=False)
    record.update(
        output_dir=f"{CONTAINER_ROOT}/checkpoints",
        environment={"backend": "sagemaker", "image": settings.image_uri, "instance_type": settings.instance_type},
    )
    job = store.create_job(
        cfg.job_name,
        record,
        description=cfg.description,
        priority=cfg.priority,
        storage=S3Sync(cfg.output_s3_uri, cfg.job_name, aws).storage,
    )
    job = launch_training_job(store, job, settings, aws)
    console.print(
        f"started SageMaker training job {job.tags['sagemaker_training_job']} for {cfg.job_name} "
        f"in {store.description}; job id:",
        highlight=False,
    )
    click.echo(job.job_id)


@click.command("sagemaker-entrypoint")
@click.argument("mode", required=False)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="LAYOUTLM_SAGEMAKER_ROOT",
    default="/opt/ml",
    show_default=True,
    help="SageMaker's folder (tests point $LAYOUTLM_SAGEMAKER_ROOT at a temporary one).",
)
def sagemaker_entrypoint(mode, root):
    """Run the job of a SageMaker training job (what docker/Dockerfile runs; SageMaker appends `train`)."""
    from ..aws import AwsSettings
    from ..fleet.sagemaker import ContainerPaths, read_hyperparameters, run_in_container

    if mode not in (None, "train"):
        raise UserError(f"sagemaker-entrypoint runs training only, not {mode!r}.")
    paths = ContainerPaths(root)
    try:
        spec = read_hyperparameters(paths.hyperparameters)
    except UserError as e:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(f"{e}\n", encoding="utf-8")
        raise
    aws = AwsSettings.resolve(spec.region)  # the container's boundary: region from the hyperparameters
    sys.exit(run_in_container(paths, spec, aws, say=console.print))
