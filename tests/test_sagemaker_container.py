"""The SageMaker container contract: `layoutlm-cli sagemaker-entrypoint` run as a real process in a
simulated /opt/ml tree (LAYOUTLM_SAGEMAKER_ROOT), a tiny model, a sqlite job store named in the
hyperparameters. A spot reclaim's SIGTERM ends the Job `interrupted`; a restart with the same
checkpoint dir resumes it to `succeeded` with one metric history; StopTrainingJob after `jobs cancel`
ends it `cancelled`; a failing run writes /opt/ml/output/failure and ends `failed`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from receipt_layoutlm.aws import AwsSettings
from receipt_layoutlm.fleet import queue
from receipt_layoutlm.fleet.sagemaker import (
    ContainerPaths,
    hyperparameters,
    link_training_job,
    read_hyperparameters,
)
from receipt_layoutlm.sources.demo import generate_receipts
from receipt_layoutlm.sources.jsonl import write_jsonl
from receipt_layoutlm.store import open_store
from receipt_layoutlm.training.config import TrainConfig

AWS = AwsSettings(region="eu-west-1")


def sagemaker_tree(tmp_path: Path, channel: bool = True, **config) -> tuple[ContainerPaths, object, str]:
    """/opt/ml as SageMaker leaves it for the container: hyperparameters.json (every value a string),
    the dataset snapshot in the `train` channel. Returns the paths, the pending Job and the store URI."""
    store_uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = open_store(store_uri)
    settings = {
        "job_name": "sm-run",
        "pretrained": "tiny",
        "epochs": 3,
        "batch_size": 2,
        "merge_amounts": True,
        "allowed_labels": ["DATE", "AMOUNT"],
        **config,
    }
    paths = ContainerPaths(tmp_path / "ml")
    if channel:
        write_jsonl(generate_receipts(60, seed=42), paths.channel("train") / "receipts.jsonl")
        settings["dataset"] = "receipts.jsonl"  # relative to the channel, as create_request sends it
    cfg = TrainConfig(**settings)
    job = store.create_job(cfg.job_name, asdict(cfg))
    link_training_job(store, job, AWS)
    params = hyperparameters(job, asdict(cfg), store_uri, AWS, "train" if channel else None)
    assert all(isinstance(v, str) for v in params.values())
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text(json.dumps(params))
    return paths, job, store_uri


def entrypoint(paths: ContainerPaths, **popen):
    env = {**os.environ, "LAYOUTLM_SAGEMAKER_ROOT": str(paths.root)}
    for name in ("LAYOUTLM_JOB_STORE", "DYNAMO_TABLE_NAME", "LAYOUTLM_TRAINING_BUCKET"):
        env.pop(name, None)
    command = [sys.executable, "-c", "from receipt_layoutlm.cli import main; main()", "sagemaker-entrypoint", "train"]
    return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def run_until_checkpoint(paths: ContainerPaths):
    """Start the container and wait until it saved its first checkpoint, so that a stop comes mid-training."""
    proc = entrypoint(paths)
    deadline = time.time() + 240
    while time.time() < deadline and not list(paths.checkpoints.glob("checkpoint-*")) and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0]
    return proc


def test_hyperparameters_split_and_read(tmp_path):
    """A config longer than SageMaker's 2500 characters per value travels in pieces and comes back whole."""
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    cfg = TrainConfig(job_name="long", dataset="demo:40", description="x" * 6000)
    job = store.create_job(cfg.job_name, asdict(cfg))
    params = hyperparameters(job, asdict(cfg), "dynamodb://T", AWS, None)
    assert {"train_config.0", "train_config.1", "train_config.2"} <= set(params) and "train_config" not in params
    assert all(len(v) <= 2500 for v in params.values())
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps(params))
    spec = read_hyperparameters(path)
    assert (spec.job_id, spec.job_store, spec.region) == (job.job_id, "dynamodb://T", "eu-west-1")
    assert spec.config == json.loads(json.dumps(asdict(cfg)))


def test_unreadable_hyperparameters_write_the_failure(tmp_path):
    paths = ContainerPaths(tmp_path / "ml")
    proc = entrypoint(paths)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in output
    assert "hyperparameters" in paths.failure.read_text()


@pytest.mark.slow
def test_spot_reclaim_then_restart_resumes_the_same_job(tmp_path):
    paths, job, store_uri = sagemaker_tree(tmp_path)
    store = open_store(store_uri)
    assert not store.get_job(job.job_id).is_stale(), "a job SageMaker is starting is not STALE"

    proc = run_until_checkpoint(paths)
    proc.send_signal(signal.SIGTERM)  # what SageMaker sends on a spot reclaim
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    job = store.get_job(job.job_id)
    assert job.status == "interrupted" and job.attempts == 1, output
    assert job.worker == f"sagemaker/{job.tags['sagemaker_training_job']}"
    assert "interrupted" in paths.failure.read_text()
    run_json = json.loads((paths.checkpoints / "run.json").read_text())
    assert run_json["job_id"] == job.job_id and run_json["status"] == "interrupted"
    # The run read the snapshot from its channel.
    assert run_json["config"]["dataset"] == str(paths.channel("train") / "receipts.jsonl")
    steps = sorted(int(p.name.split("-")[1]) for p in paths.checkpoints.glob("checkpoint-*"))
    assert steps

    # SageMaker restores /opt/ml/checkpoints on the new instance (here: the same folder) and starts again.
    paths.failure.unlink()
    proc = entrypoint(paths)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    job = store.get_job(job.job_id)
    assert job.status == "succeeded" and job.attempts == 2
    assert not paths.failure.exists()
    assert (paths.model / "model.safetensors").exists() and (paths.model / "label_map.json").exists()
    history = [s["status"] for s in store.status_history(job.job_id)]
    assert history == ["pending", "running", "interrupted", "running", "succeeded"], history
    # One continuous history: every epoch evaluated once, over both containers.
    assert [m["epoch"] for m in store.metrics(job.job_id, "val_f1")] == [1, 2, 3]
    run_json = json.loads((paths.checkpoints / "run.json").read_text())
    assert [e["epoch"] for e in run_json["epoch_metrics"]] == [1, 2, 3] and run_json["status"] == "succeeded"
    assert len(store.list_jobs()) == 1


@pytest.mark.slow
def test_stop_training_job_after_a_cancel_ends_cancelled(tmp_path):
    paths, job, store_uri = sagemaker_tree(tmp_path, channel=False, dataset="demo:60")
    store = open_store(store_uri)
    proc = run_until_checkpoint(paths)
    assert queue.cancel(store, store.get_job(job.job_id)) == "cancel requested"  # what `jobs cancel` does first
    proc.send_signal(signal.SIGTERM)  # then StopTrainingJob: SageMaker sends SIGTERM
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1, output
    job = store.get_job(job.job_id)
    assert job.status == "cancelled", (job.status, output)
    assert "cancelled" in paths.failure.read_text()
    assert "interrupted" not in [s["status"] for s in store.status_history(job.job_id)][-1:]


def test_failing_run_writes_the_failure_and_fails_the_job(tmp_path):
    paths, job, store_uri = sagemaker_tree(tmp_path, channel=False, dataset="demo:40", allowed_labels=["NOT_A_LABEL"])
    proc = entrypoint(paths)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1 and "Traceback" not in output, output
    job = open_store(store_uri).get_job(job.job_id)
    assert job.status == "failed"
    failure = paths.failure.read_text()
    assert "NOT_A_LABEL" in failure and f"Job {job.job_id} is failed" in failure
    assert "NOT_A_LABEL" in store_message(store_uri, job.job_id)

    # A container started again for a finished job trains nothing and changes nothing.
    proc = entrypoint(paths)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1 and "is failed; nothing to run" in output
    assert open_store(store_uri).get_job(job.job_id).attempts == 1


def store_message(store_uri: str, job_id: str) -> str:
    return open_store(store_uri).status_history(job_id)[-1].get("message", "")
