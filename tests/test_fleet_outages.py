"""Outages injected for real while a `train` process runs (issue 11, item 7): DynamoDB Local killed and
restarted on the same port, S3 (moto) refusing writes by a bucket policy, and a SIGTERM after an epoch
followed by --resume compared with an uninterrupted run of the same seed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import aws_servers
import boto3
import pytest
from test_fleet_faults import wait_for

from receipt_layoutlm.store import open_store

TRAIN = [
    "--dataset",
    "demo:40",
    "--pretrained",
    "tiny",
    "--batch-size",
    "16",
    "--max-seq-length",
    "64",
    "--window-overlap",
    "16",
    "--merge-amounts",
    "--allowed-label",
    "DATE",
    "--allowed-label",
    "AMOUNT",
    "--seed",
    "7",
]


def train(*args, env, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "from receipt_layoutlm.cli import main; main()", "train", *map(str, args)]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def env_for(store_uri: str, **extra) -> dict:
    env = {**os.environ, "LAYOUTLM_JOB_STORE": store_uri, **extra}
    env.pop("DYNAMO_TABLE_NAME", None)
    return env


def epochs_of(store, job_id: str, name: str) -> list[int]:
    return sorted(m["epoch"] for m in store.metrics(job_id, name))


@pytest.mark.slow
def test_dynamodb_local_stopped_and_restarted_mid_run(aws_env, tmp_path):
    """The job store (DynamoDB Local, data on disk) is killed after epoch 1 and started again on the same
    port: training goes on, writes wait in journal.jsonl, reach the table when it is back, and the job ends
    `succeeded` with every epoch's metrics exactly once and a JobCheckpoint row for every checkpoint uploaded."""
    from receipt_layoutlm.store.dynamodb import create_table

    port, data = aws_servers.free_port(), tmp_path / "dynamodb-data"
    data.mkdir()
    server, url = aws_servers.start_dynamodb_local(db_path=data, port=port)
    try:
        settings = replace(aws_env, dynamodb_endpoint=url)
        create_table("outage", settings)
        uri = "dynamodb://outage"
        env, store = env_for(uri, DYNAMODB_ENDPOINT_URL=url), open_store(uri, settings)
        out, log = tmp_path / "run", tmp_path / "train.log"
        bucket = "outage-bucket"
        boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        proc = train(
            "--job-name", "outage", "--output-dir", out, *TRAIN, "--epochs", "4", "--save-total-limit", "10",
            "--output-s3-uri", f"s3://{bucket}/runs", env=env, log=log,
        )  # fmt: skip
        job_id = wait_for("the job", lambda: [j.job_id for j in store.list_jobs()], procs=[proc])[0]
        wait_for("epoch 1 in the table", lambda: store.metrics(job_id, "val_f1"), procs=[proc])

        server.kill()  # the store goes away, without warning
        server.wait()
        journal = out / "journal.jsonl"
        wait_for("writes journaled while the store is away", journal.exists, procs=[proc])
        # Paused while the store restarts, so that the store comes back while training still runs.
        proc.send_signal(signal.SIGSTOP)
        try:
            server, _ = aws_servers.start_dynamodb_local(db_path=data, port=port)
        finally:
            proc.send_signal(signal.SIGCONT)

        assert proc.wait(timeout=600) == 0, log.read_text()
        output = log.read_text()
        assert "Traceback" not in output
        assert not journal.exists(), "the journal is flushed once the store answers"
        job = store.get_job(job_id)
        assert job.status == "succeeded" and job.results["epochs_completed"] == 4
        assert [s["status"] for s in store.status_history(job_id)] == ["pending", "running", "succeeded"]
        for name in ("val_f1", "eval_loss", "label_DATE_f1"):
            assert epochs_of(store, job_id, name) == [1, 2, 3, 4], name  # every epoch, exactly once
        run_json = json.loads((out / "run.json").read_text())
        assert [e["epoch"] for e in run_json["epoch_metrics"]] == [1, 2, 3, 4]
        stored_f1 = {m["epoch"]: m["value"] for m in store.metrics(job_id, "val_f1")}
        assert stored_f1 == {e["epoch"]: e["val_f1"] for e in run_json["epoch_metrics"]}
        messages = [log["message"] for log in store.logs(job_id)]
        assert len(messages) == len(set(messages)) and any('"run_summary"' in m for m in messages)
        # Every uploaded checkpoint has its JobCheckpoint row, those uploaded while the store was away too.
        rows = store.checkpoints(job_id)
        assert sorted(r["step"] for r in rows if not r["is_best"]) == [e["step"] for e in run_json["epoch_metrics"]]
        assert not [m for m in messages if "failed" in m], messages
    finally:
        aws_servers.stop(server)


@pytest.mark.slow
def test_a_worker_rides_out_a_store_outage(aws_env, tmp_path):
    """A worker runs a queued job on DynamoDB Local, which is killed mid-run and started again: the worker
    keeps its child (which journals), claims nothing while the store is away, and once it is back the job
    ends `succeeded` with each epoch once and its InstanceJob `completed`; the worker exits 0."""
    from receipt_layoutlm.store.dynamodb import create_table

    port, data = aws_servers.free_port(), tmp_path / "dynamodb-data"
    data.mkdir()
    server, url = aws_servers.start_dynamodb_local(db_path=data, port=port)
    try:
        settings = replace(aws_env, dynamodb_endpoint=url)
        create_table("worker-outage", settings)
        uri = "dynamodb://worker-outage"
        env = env_for(uri, DYNAMODB_ENDPOINT_URL=url, LAYOUTLM_IMDS_ENDPOINT="http://127.0.0.1:9")
        store = open_store(uri, settings)
        out = tmp_path / "run"
        cli = [sys.executable, "-c", "from receipt_layoutlm.cli import main; main()"]
        done = subprocess.run(
            [*cli, "submit", "--job-name", "wk", "--output-dir", str(out), *TRAIN, "--epochs", "4"],
            env=env, text=True, capture_output=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        job_id = done.stdout.strip().splitlines()[-1]
        log = tmp_path / "worker.log"
        worker = subprocess.Popen(
            [*cli, "worker", "--poll", "0.5", "--max-jobs", "1"],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_for("epoch 1 in the table", lambda: store.metrics(job_id, "val_f1"), procs=[worker])
        child = store.get_job(job_id).pid

        server.kill()  # the store goes away, without warning
        server.wait()
        wait_for("writes journaled while the store is away", (out / "journal.jsonl").exists, procs=[worker])
        wait_for("the worker to notice", lambda: "job store unavailable" in log.read_text(), procs=[worker])
        os.kill(child, signal.SIGSTOP)  # so that the store comes back while the job still runs
        try:
            server, _ = aws_servers.start_dynamodb_local(db_path=data, port=port)
        finally:
            os.kill(child, signal.SIGCONT)

        assert worker.wait(timeout=600) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        job = store.get_job(job_id)
        assert job.status == "succeeded" and job.attempts == 1, log.read_text()
        assert [s["status"] for s in store.status_history(job_id)] == ["pending", "running", "succeeded"]
        assert epochs_of(store, job_id, "val_f1") == [1, 2, 3, 4]
        assert not (out / "journal.jsonl").exists()
        (instance_job,) = store.table.query("JOB", f"JOB#{job_id}#INSTANCE#", index="GSI1")
        assert instance_job["status"] == "completed"
    finally:
        aws_servers.stop(server)


@pytest.mark.slow
def test_store_still_away_at_the_end_then_flush_journal(aws_env, tmp_path):
    """The store goes away for good during the last epoch: the run still writes best/ and run.json, keeps
    its journal, and ends with one sentence saying how the journal gets written; `jobs flush-journal`
    writes it once the store is back, and the job reads `succeeded` with each epoch once."""
    from receipt_layoutlm.store.dynamodb import create_table

    port, data = aws_servers.free_port(), tmp_path / "dynamodb-data"
    data.mkdir()
    server, url = aws_servers.start_dynamodb_local(db_path=data, port=port)
    try:
        settings = replace(aws_env, dynamodb_endpoint=url)
        create_table("away", settings)
        uri = "dynamodb://away"
        env, store = env_for(uri, DYNAMODB_ENDPOINT_URL=url), open_store(uri, settings)
        out, log = tmp_path / "run", tmp_path / "train.log"
        proc = train("--job-name", "away", "--output-dir", out, *TRAIN, "--epochs", "2", env=env, log=log)
        job_id = wait_for("the job", lambda: [j.job_id for j in store.list_jobs()], procs=[proc])[0]
        wait_for("epoch 1 in the table", lambda: store.metrics(job_id, "val_f1"), procs=[proc])
        server.kill()
        server.wait()

        assert proc.wait(timeout=600) == 2, log.read_text()
        output = log.read_text()
        assert "Traceback" not in output
        (error,) = [line for line in output.splitlines() if line.startswith("error:")]
        assert f"best/ is in {out / 'best'}" in error and f"jobs flush-journal {out} --job-store {uri}" in error, error
        assert (out / "best" / "model.safetensors").exists()
        assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
        assert (out / "journal.jsonl").exists()

        server, _ = aws_servers.start_dynamodb_local(db_path=data, port=port)
        assert store.get_job(job_id).status == "running"  # what the store knew when it went away
        command = [sys.executable, "-c", "from receipt_layoutlm.cli import main; main()", "jobs", "flush-journal"]
        done = subprocess.run([*command, str(out)], env=env, text=True, capture_output=True, timeout=300)
        assert done.returncode == 0 and "flushed" in done.stdout, done.stdout + done.stderr
        assert not (out / "journal.jsonl").exists()
        job = store.get_job(job_id)
        assert job.status == "succeeded" and job.results["epochs_completed"] == 2
        assert [s["status"] for s in store.status_history(job_id)] == ["pending", "running", "succeeded"]
        assert epochs_of(store, job_id, "val_f1") == [1, 2]
    finally:
        aws_servers.stop(server)


@pytest.mark.slow
def test_s3_refusing_writes_training_goes_on(aws_env, tmp_path):
    """The bucket starts refusing PutObject (a deny policy) after the first checkpoint is up: training
    goes on to the last epoch, each failed upload is an ERROR JobLog, best/ is written locally, and the
    command ends non-zero with one sentence."""
    bucket = "outage-refuses"
    s3 = boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    env, store = env_for(uri), open_store(uri)
    out, log = tmp_path / "run", tmp_path / "train.log"
    proc = train(
        "--job-name", "refused", "--output-dir", out, *TRAIN, "--epochs", "4",
        "--output-s3-uri", f"s3://{bucket}/runs", env=env, log=log,
    )  # fmt: skip
    job_id = wait_for("the job", lambda: [j.job_id for j in store.list_jobs()], procs=[proc])[0]
    wait_for("an uploaded checkpoint", lambda: store.checkpoints(job_id), procs=[proc])
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))

    assert proc.wait(timeout=600) == 2, log.read_text()
    output = log.read_text()
    assert "Traceback" not in output
    error = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "S3 upload(s) failed" in error[0] and f"best/ is in {out / 'best'}" in error[0]
    assert (out / "best" / "model.safetensors").exists()
    run_json = json.loads((out / "run.json").read_text())
    assert [e["epoch"] for e in run_json["epoch_metrics"]] == [1, 2, 3, 4]  # training went on
    job = store.get_job(job_id)
    assert job.status == "succeeded"  # the model is trained and recorded; what is missing is in S3
    errors = [log["message"] for log in store.logs(job_id) if log["log_level"] == "ERROR"]
    assert errors and all(f"s3://{bucket}/" in m and "failed" in m for m in errors)
    assert len(store.checkpoints(job_id)) < 5  # no row for an upload that did not happen


@pytest.mark.slow
def test_interrupted_then_resumed_matches_an_uninterrupted_run(tmp_path):
    """Same seed, same data: a run stopped by SIGTERM after its first epoch and continued with --resume
    records the same validation metrics per epoch and the same best F1 as a run never stopped."""
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    env, store = env_for(uri), open_store(uri)
    whole, split = tmp_path / "whole", tmp_path / "split"
    common = [*TRAIN, "--epochs", "3"]
    uninterrupted = train("--job-name", "whole", "--output-dir", whole, *common, env=env, log=tmp_path / "w.log")
    # --save-total-limit 1: the Trainer keeps only the best checkpoint when training ends, which must not
    # take the one saved at the stop (the run resumes from it).
    split_args = [*common, "--save-total-limit", "1"]
    first = train("--job-name", "split", "--output-dir", split, *split_args, env=env, log=tmp_path / "s1.log")
    wait_for("epoch 1's checkpoint", lambda: list(split.glob("checkpoint-*/trainer_state.json")), procs=[first])
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=600) == 2, (tmp_path / "s1.log").read_text()
    assert json.loads((split / "run.json").read_text())["status"] == "interrupted"
    (job,) = [j for j in store.list_jobs() if j.name == "split"]
    message = store.status_history(job.job_id)[-1]["message"]
    (saved,) = re.findall(r"checkpoint-\d+(?= saved)", message)
    assert (split / saved / "trainer_state.json").is_file(), (message, sorted(p.name for p in split.iterdir()))
    second = train(
        "--job-name", "split", "--output-dir", split, *split_args, "--resume", env=env, log=tmp_path / "s2.log"
    )
    assert second.wait(timeout=600) == 0, (tmp_path / "s2.log").read_text()
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "w.log").read_text()

    runs = {name: json.loads((tmp_path / name / "run.json").read_text()) for name in ("whole", "split")}
    a, b = (runs[name]["epoch_metrics"] for name in ("whole", "split"))
    assert [e["epoch"] for e in a] == [e["epoch"] for e in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        assert abs(x["val_f1"] - y["val_f1"]) < 1e-6, (x, y)
        assert abs(x["eval_loss"] - y["eval_loss"]) < 1e-4 * abs(x["eval_loss"]), (x, y)
    best = {name: run["summary"]["best_f1"] for name, run in runs.items()}
    assert abs(best["whole"] - best["split"]) < 1e-6, best
    (job,) = [j for j in store.list_jobs() if j.name == "split"]
    assert epochs_of(store, job.job_id, "val_f1") == [1, 2, 3]
