"""SageMaker training jobs that run this tool and record themselves in the same job store.

Launching side (`submit --backend sagemaker`, the sweep): `launch_training_job` turns a pending Job
into one CreateTrainingJob request and records the training job's name and ARN in the Job's tags;
`describe` and `stop` serve `jobs show --remote` and `jobs cancel`.

Container side (`layoutlm-cli sagemaker-entrypoint`, what docker/Dockerfile runs): `run_in_container`
reads the hyperparameters SageMaker wrote, claims the Job, and runs it through the same
run_training as `train`, with the output dir in <root>/checkpoints (SageMaker syncs it to the
CheckpointConfig S3 URI and restores it after a spot restart: a restart then resumes the same Job
from its newest complete checkpoint). best/ is copied to <root>/model; a run that does not succeed
writes its reason to <root>/output/failure. <root> is /opt/ml in SageMaker.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
from dataclasses import dataclass, fields, replace
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from ..aws import AwsSettings, aws_session, explain
from ..errors import UserError
from ..store import DEFAULT_LEASE_SECONDS, ConditionFailed, Job, JobStore, now_iso

CONTAINER_ROOT = "/opt/ml"
CHANNEL = "train"  # the data channel holding a dataset snapshot: <root>/input/data/train/
HYPERPARAMETER_LIMIT = 2500  # characters per value (the API's limit)
CONFIG_KEY = "train_config"  # the TrainConfig as JSON, split into train_config.0, .1, ... when longer
DATASET_PREFIXES = ("wildreceipt", "sroie", "cord", "funsd")  # `--dataset KIND:PATH` (sources/__init__.py)
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class SageMakerSettings:
    """What a training job runs on (the `submit --backend sagemaker` flags)."""

    image_uri: str
    role_arn: str
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1
    volume_gb: int = 50
    max_run: int = 24 * 3600  # MaxRuntimeInSeconds: training time, restarts included
    spot: bool = False
    max_wait: int | None = None  # MaxWaitTimeInSeconds (spot only): training plus waiting for capacity


def sagemaker_client(aws: AwsSettings):
    """The boto3 SageMaker client of `aws.region` (tests replace this function by a stubbed client)."""
    return aws_session().client("sagemaker", region_name=aws.region)


def check_settings(settings: SageMakerSettings, cfg, store_uri: str) -> None:
    """What CreateTrainingJob or the container would refuse, refused before the Job is written."""
    if not store_uri.startswith("dynamodb://"):
        raise UserError(
            f"A SageMaker job cannot reach the job store {store_uri}; record it in your table with "
            "--dynamo-table T or --job-store dynamodb://T."
        )
    if not cfg.output_s3_uri:
        raise UserError("--backend sagemaker needs --output-s3-uri s3://BUCKET/PREFIX for checkpoints and the model.")
    if settings.instance_count != 1:
        raise UserError(
            f"--instance-count {settings.instance_count}: the container trains on one instance (all its GPUs); "
            "pass --instance-count 1."
        )
    if settings.spot:
        if settings.max_wait is None:
            raise UserError("--spot needs --max-wait SECONDS (training plus waiting for spot capacity).")
        if settings.max_wait < settings.max_run:
            raise UserError(
                f"--max-wait {settings.max_wait} must be at least --max-run {settings.max_run} "
                "(it counts the training time too)."
            )
    elif settings.max_wait is not None:
        raise UserError("--max-wait applies to spot training only; add --spot or drop --max-wait.")
    if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+", settings.role_arn):
        raise UserError(f"--role-arn {settings.role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME).")


def training_job_name(job: Job) -> str:
    """A TrainingJobName (63 characters of [a-zA-Z0-9-]), unique through the job id."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", job.name).strip("-")[:54] or "layoutlm"
    return f"{base}-{job.job_id[:8]}"


def local_dataset(dataset: str | None) -> Path | None:
    """The local file or folder a `--dataset` value reads (None for demo data or the table)."""
    if dataset is None or dataset == "demo" or dataset.startswith("demo:"):
        return None
    kind, sep, rest = dataset.partition(":")
    return Path(rest if sep and kind in DATASET_PREFIXES else dataset)


def channel_dataset(dataset: str, snapshot: str) -> str:
    """The `--dataset` value inside the container: the same kind, the snapshot's name in the channel."""
    kind, sep, _ = dataset.partition(":")
    return f"{kind}:{snapshot}" if sep and kind in DATASET_PREFIXES else snapshot


def hyperparameters(job: Job, config: dict, store_uri: str, aws: AwsSettings, channel: str | None) -> dict:
    """SageMaker's hyperparameters (all strings): the job, its store, the region and the train config."""
    text = json.dumps(config, separators=(",", ":"), default=str)
    pieces = [text[i : i + HYPERPARAMETER_LIMIT] for i in range(0, len(text), HYPERPARAMETER_LIMIT)]
    params = {"job_id": job.job_id, "job_store": store_uri, "region": aws.region}
    if channel:
        params["dataset_channel"] = channel
    if len(pieces) == 1:
        params[CONFIG_KEY] = text
    else:
        params.update({f"{CONFIG_KEY}.{i}": p for i, p in enumerate(pieces)})
    return params


@dataclass
class ContainerJob:
    """What the hyperparameters say: which Job, where it is recorded, and its TrainConfig fields."""

    job_id: str
    job_store: str
    region: str
    config: dict
    dataset_channel: str | None = None


def read_hyperparameters(path: Path) -> ContainerJob:
    try:
        params = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(
            f"Cannot read the hyperparameters {path} ({e}); start the job with `submit --backend sagemaker`."
        ) from None
    missing = [k for k in ("job_id", "job_store", "region") if not params.get(k)]
    if CONFIG_KEY in params:
        text = params[CONFIG_KEY]
    else:
        n = sum(1 for k in params if k.startswith(f"{CONFIG_KEY}."))
        text = "".join(params.get(f"{CONFIG_KEY}.{i}", "") for i in range(n))
    if missing or not text:
        raise UserError(f"The hyperparameters {path} lack {', '.join(missing) or CONFIG_KEY}; resubmit the job.")
    try:
        config = json.loads(text)
    except ValueError as e:
        raise UserError(f"The train config in {path} is not JSON ({e}); resubmit the job.") from None
    return ContainerJob(params["job_id"], params["job_store"], params["region"], config, params.get("dataset_channel"))


def create_request(job: Job, cfg, settings: SageMakerSettings, aws: AwsSettings, store_uri: str, snapshot=None):
    """The CreateTrainingJob parameters of a Job (cfg: its TrainConfig). snapshot: the name of its dataset
    in the data channel (upload_snapshot), or None when it reads demo data or the table."""
    from ..s3 import S3Sync

    s3 = S3Sync(cfg.output_s3_uri, cfg.job_name, aws)
    stopping = {"MaxRuntimeInSeconds": settings.max_run}
    if settings.spot:
        stopping["MaxWaitTimeInSeconds"] = settings.max_wait
    config = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    config["output_dir"] = None  # the container trains in <root>/checkpoints
    if snapshot:
        config["dataset"] = channel_dataset(cfg.dataset, snapshot)
    request = {
        "TrainingJobName": training_job_name(job),
        "HyperParameters": hyperparameters(job, config, store_uri, aws, CHANNEL if snapshot else None),
        "AlgorithmSpecification": {"TrainingImage": settings.image_uri, "TrainingInputMode": "File"},
        "RoleArn": settings.role_arn,
        "OutputDataConfig": {"S3OutputPath": s3.url(s3.run_root_prefix + "sagemaker/output/")},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": settings.instance_count,
            "VolumeSizeInGB": settings.volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": settings.spot,
        "CheckpointConfig": {
            "S3Uri": s3.url(s3.run_root_prefix + "sagemaker/checkpoints/"),
            "LocalPath": f"{CONTAINER_ROOT}/checkpoints",
        },
        "Tags": [
            {"Key": "layoutlm:job-id", "Value": job.job_id},
            {"Key": "layoutlm:job-name", "Value": job.name[:256]},
        ],
    }
    if snapshot:
        request["InputDataConfig"] = [
            {
                "ChannelName": CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": s3.url(s3.run_root_prefix + "sagemaker/input/"),
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
        ]
    return request


def upload_snapshot(cfg, aws: AwsSettings) -> str | None:
    """Copy a local dataset (file or folder) to <output-s3-uri>/<job>/sagemaker/input/, the data channel's
    prefix (the container finds it in <root>/input/data/train/<name>); returns its name."""
    from ..s3 import S3Sync

    path = local_dataset(cfg.dataset)
    if path is None:
        return None
    s3 = S3Sync(cfg.output_s3_uri, cfg.job_name, aws)
    key = s3.run_root_prefix + "sagemaker/input/" + path.name
    if path.is_dir():
        s3.upload_dir(path, key)
    else:
        s3.upload_file(path, key)
    return path.name


def explain_sagemaker_error(error: Exception, what: str) -> str:
    """A SageMaker failure as one sentence."""
    known = explain(error, "SageMaker", what, "SageMaker", "--region")
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ResourceLimitExceeded":
            return (
                f"SageMaker refused {what}: a quota is used up ({message}); request a higher quota in Service Quotas "
                "or pick another --instance-type."
            )
        if code == "ValidationException":
            return f"SageMaker refused {what} as invalid: {message}"
    if known is not None:
        return str(known)
    return f"SageMaker call for {what} failed: {error}"


def link_training_job(store: JobStore, job: Job, aws: AwsSettings) -> str:
    """Tag a pending Job with its training job's name before the job is created, so that a crash after
    the call still shows the link. No host or pid: nobody runs it here, and it must not read STALE while
    SageMaker starts it. Returns the training job name."""
    name = training_job_name(job)
    job.tags.update(backend="sagemaker", sagemaker_training_job=name, sagemaker_region=aws.region)
    job.host = job.pid = None
    store.table.put(job.to_item(), expect={"status": "pending", "attempts": None})
    return name


def launch_training_job(store: JobStore, job: Job, settings: SageMakerSettings, aws: AwsSettings, client=None) -> Job:
    """Start the SageMaker training job of a pending Job and record its name and ARN in job.tags. A refused
    request ends the Job `failed` with the reason and raises UserError (one sentence)."""
    from .worker import config_from_record

    cfg = config_from_record(job.job_config)
    name = link_training_job(store, job, aws)
    try:
        check_settings(settings, cfg, store.description)  # `submit` checked already; other callers may not
        snapshot = upload_snapshot(cfg, aws)
        request = create_request(job, cfg, settings, aws, store.description, snapshot)
        response = (client or sagemaker_client(aws)).create_training_job(**request)
    except (BotoCoreError, ClientError, UserError) as e:
        reason = (
            str(e)
            if isinstance(e, UserError)
            else explain_sagemaker_error(e, f"the training job {name} (role {settings.role_arn})")
        )
        store.transition(job, "failed", {"status": "pending"}, message=reason[:500])
        store.add_log(job.job_id, "ERROR", reason, source="submit")
        raise UserError(f"{reason} Job {job.job_id} is marked failed.") from None
    job.tags["sagemaker_arn"] = response["TrainingJobArn"]
    store.update_job(job)
    store.add_log(job.job_id, "INFO", f"SageMaker training job {response['TrainingJobArn']} created", source="submit")
    return job


def describe(job: Job, aws: AwsSettings, client=None) -> dict:
    """DescribeTrainingJob, reduced to what `jobs show --remote` prints."""
    name = job.tags.get("sagemaker_training_job")
    if not name:
        raise UserError(f"Job {job.name} ({job.job_id}) did not run on SageMaker; --remote has nothing to add.")
    try:
        d = (client or sagemaker_client(job_region(job, aws))).describe_training_job(TrainingJobName=name)
    except (BotoCoreError, ClientError) as e:
        raise UserError(explain_sagemaker_error(e, f"the training job {name}")) from None
    training, billable = d.get("TrainingTimeInSeconds"), d.get("BillableTimeInSeconds")
    return {
        "training_job": name,
        "status": d["TrainingJobStatus"],
        "secondary_status": d["SecondaryStatus"],
        "failure_reason": d.get("FailureReason"),
        "training_seconds": training,
        "billable_seconds": billable,
        # Managed spot: billable time is what was paid for; the rest of the training time was saved.
        "spot_savings": round(1 - billable / training, 4) if training and billable is not None else None,
    }


def stop_failed(error: Exception, name: str) -> str:
    return (
        explain_sagemaker_error(error, f"stopping the training job {name}").rstrip(".")
        + "; the cancel is recorded (the run stops at its next log); stop the training job in the console."
    )


def reconcile(store: JobStore, job: Job, info: dict) -> Job:
    """A training job that ended while its Job still reads pending or running died without recording
    its end (e.g. the image did not start, or the role cannot write the table): record it now."""
    if info["status"] not in ("Failed", "Stopped") or job.status not in ("pending", "running"):
        return job
    if info["status"] == "Stopped":
        status = "cancelled" if job.cancel_requested else "interrupted"
    else:
        status = "failed"
    message = f"SageMaker training job {info['training_job']} ended {info['status']}"
    if info["failure_reason"]:
        message += f": {info['failure_reason']}"
    try:
        store.transition(job, status, {"status": job.status, "attempts": job.attempts or None}, message=message[:500])
        store.add_log(job.job_id, "ERROR" if status == "failed" else "WARNING", message, source="sagemaker")
    except ConditionFailed:
        return store.get_job(job.job_id)
    return job


def describe_line(info: dict) -> str:
    """`jobs show --remote`'s line for describe()."""
    line = f"SageMaker {info['training_job']}: {info['status']} ({info['secondary_status']})"
    if info["billable_seconds"] is not None:
        line += f", billable {info['billable_seconds']} s of {info['training_seconds']} s"
    if info["spot_savings"] is not None:
        line += f", spot savings {info['spot_savings']:.0%}"
    if info["failure_reason"]:
        line += f"; failure: {info['failure_reason']}"
    return line


def job_region(job: Job, aws: AwsSettings) -> AwsSettings:
    """The settings of the region the training job was created in."""
    region = job.tags.get("sagemaker_region") or aws.region
    return aws if region == aws.region else replace(aws, region=region)


def stop(job: Job, aws: AwsSettings, client=None) -> str:
    """StopTrainingJob; returns what happened in words. A job that already ended is not an error."""
    name = job.tags["sagemaker_training_job"]
    try:
        (client or sagemaker_client(job_region(job, aws))).stop_training_job(TrainingJobName=name)
    except ClientError as e:
        message = e.response.get("Error", {}).get("Message", "")
        if e.response.get("Error", {}).get("Code") == "ValidationException" and "status" in message.lower():
            return f"SageMaker training job {name} had already ended ({message})"
        raise UserError(stop_failed(e, name)) from None
    except BotoCoreError as e:
        raise UserError(stop_failed(e, name)) from None
    return f"SageMaker training job {name} is stopping"


# --- inside the container --------------------------------------------------------------
@dataclass(frozen=True)
class ContainerPaths:
    """SageMaker's folders under one root (/opt/ml; tests pass a temporary folder)."""

    root: Path

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


class StoppedBeforeTraining(BaseException):
    """SIGTERM before run_training installed its own handler (a container's pid 1 ignores it otherwise)."""


def _stop_early(signum, frame):
    raise StoppedBeforeTraining("received SIGTERM before training started")


def container_config(spec: ContainerJob, paths: ContainerPaths):
    """The TrainConfig of the run here: the submitted one, trained in <root>/checkpoints, reading the
    dataset snapshot from its channel when it came in one."""
    from ..training.config import TrainConfig

    config = {f.name: spec.config[f.name] for f in fields(TrainConfig) if f.name in spec.config}
    config["output_dir"] = str(paths.checkpoints)
    if spec.dataset_channel:
        kind, sep, rest = config["dataset"].partition(":")
        inside = paths.channel(spec.dataset_channel)
        prefixed = sep and kind in DATASET_PREFIXES
        config["dataset"] = f"{kind}:{inside / rest}" if prefixed else str(inside / config["dataset"])
    return TrainConfig(**config)


def run_in_container(paths: ContainerPaths, spec: ContainerJob, aws: AwsSettings, say=print) -> int:
    """Run the Job of the hyperparameters here; 0 when it succeeded. Any other end writes the reason to
    <root>/output/failure and leaves the Job failed, interrupted or cancelled, as a local run does."""
    from ..store import open_store
    from ..training.artifacts import CLAIM_FILE
    from ..training.run import run_training

    old_handler = signal.signal(signal.SIGTERM, _stop_early)
    store = job = None
    attempt = 0
    try:
        store = open_store(spec.job_store, aws)
        job = store.get_job(spec.job_id)
        if job is None:
            raise UserError(f"No job {spec.job_id} in {store.description}; resubmit it.")
        if job.status == "succeeded":
            say(f"job {job.job_id} ({job.name}) already succeeded; nothing to do")
            return 0
        if job.status in FINISHED:
            raise UserError(f"Job {job.name} ({job.job_id}) is {job.status}; nothing to run.")
        cfg = container_config(spec, paths)
        # SageMaker runs one container of this job at a time: a claim file restored from S3 is an earlier
        # container's, dead with it (its pid may even be alive again here, in another process).
        (paths.checkpoints / CLAIM_FILE).unlink(missing_ok=True)
        attempt = job.attempts + 1
        store.transition(
            job,
            "running",
            expect={"status": job.status, "attempts": job.attempts or None},
            message=f"attempt {attempt}: started in SageMaker training job {job.tags.get('sagemaker_training_job')}",
            attempts=attempt,
            worker=f"sagemaker/{job.tags.get('sagemaker_training_job', '')}",
            host=None,
            pid=None,
            heartbeat_at=now_iso(),
            lease_seconds=job.lease_seconds or DEFAULT_LEASE_SECONDS,
        )
        summary = run_training(cfg, store_uri=spec.job_store, job=job, say=say, aws=aws)
        best = Path(summary["best_dir"])
        shutil.copytree(best, paths.model, dirs_exist_ok=True)
        say(f"job {job.job_id} ({job.name}) succeeded; best/ copied to {paths.model}")
        return 0
    except (UserError, ConditionFailed, StoppedBeforeTraining, Exception) as e:
        reason = str(e) if isinstance(e, (UserError, StoppedBeforeTraining)) else f"{type(e).__name__}: {e}"
        if isinstance(e, ConditionFailed):
            reason = f"Job {spec.job_id} changed while this container claimed it; look at `jobs show`."
        if store is not None and job is not None and attempt:
            reason = _settle(store, job.job_id, attempt, reason, stopped=isinstance(e, StoppedBeforeTraining))
        say(f"error: {reason}")
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(reason[:1000] + "\n", encoding="utf-8")
        return 1
    finally:
        signal.signal(signal.SIGTERM, old_handler)


def _settle(store: JobStore, job_id: str, attempt: int, reason: str, stopped: bool) -> str:
    """After a run that did not succeed, make the Job tell the truth; returns the reason to report.

    - still `running` under this attempt: the run was refused or stopped before it recorded an end;
    - `interrupted` with a cancel requested: `jobs cancel` sent StopTrainingJob, whose SIGTERM the run
      took for a reclaim; it was a cancel.
    """
    job = store.get_job(job_id)
    if job is None or job.attempts != attempt:
        return reason
    expect = {"status": job.status, "attempts": attempt}
    try:
        if job.status == "running":
            status = "cancelled" if job.cancel_requested else ("interrupted" if stopped else "failed")
            store.transition(job, status, expect, message=reason[:500])
            store.add_log(job_id, "ERROR" if status == "failed" else "WARNING", reason, source="sagemaker")
        elif job.status == "interrupted" and job.cancel_requested:
            store.transition(job, "cancelled", expect, message="cancelled by user (StopTrainingJob)")
    except ConditionFailed:
        pass
    job = store.get_job(job_id)
    history = store.status_history(job_id)
    last = history[-1].get("message") if history else None
    return f"Job {job_id} is {job.status}: {last or reason}"
