"""Faults injected for real: worker and training processes killed with real signals, a fake IMDS
announcing a spot interruption, against DynamoDB Local and sqlite. Each test checks the statuses,
the status history, the queue/instance items and the files left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_fleet_queue import fake_imds  # noqa: F401 - fixture

from receipt_layoutlm.aws import AwsSettings
from receipt_layoutlm.fleet import queue
from receipt_layoutlm.store import open_store

TRAIN = [
    "--dataset",
    "demo:12",
    "--pretrained",
    "tiny",
    "--batch-size",
    "8",
    "--max-seq-length",
    "64",
    "--window-overlap",
    "16",
    "--merge-amounts",
    "--allowed-label",
    "DATE",
    "--allowed-label",
    "AMOUNT",
]


def cli(*args) -> list[str]:
    return [sys.executable, "-c", "from receipt_layoutlm.cli import main; main()", *map(str, args)]


def env_for(store_uri: str, **extra) -> dict:
    env = {**os.environ, "LAYOUTLM_JOB_STORE": store_uri, "LAYOUTLM_IMDS_ENDPOINT": "http://127.0.0.1:9", **extra}
    env.pop("DYNAMO_TABLE_NAME", None)
    return env


def run(*args, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=env, text=True, capture_output=True, timeout=timeout)


def start(*args, env, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cli(*args), env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(what, predicate, timeout=300, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            assert p.poll() is None, f"process exited ({p.returncode}) while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def submit(env, name, out, *extra) -> str:
    done = run("submit", "--job-name", name, "--output-dir", out, *TRAIN, *extra, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def listed(env) -> dict:
    done = run("jobs", "list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {j["job_id"]: j for j in json.loads(done.stdout)}


def statuses(store, job_id) -> list[str]:
    return [s["status"] for s in store.status_history(job_id)]


def test_fleet_sigkill_stale_then_finished_elsewhere_and_cancel(fresh_table, tmp_path):
    """Three jobs, two workers on DynamoDB Local: the machine running one job dies (worker and training
    process SIGKILLed), `jobs list` shows it STALE, the second worker finishes it and the other job; the
    third is cancelled while it waits."""
    uri = f"dynamodb://{fresh_table}"
    env, store = env_for(uri), open_store(uri, AwsSettings.resolve())
    # Long enough to still be running after the `jobs list` below, even on a quiet machine.
    slow = submit(env, "slow", tmp_path / "slow", "--epochs", "10")
    quick = submit(env, "quick", tmp_path / "quick", "--epochs", "1")
    doomed = submit(env, "doomed", tmp_path / "doomed", "--epochs", "1", "--priority", "low")
    assert run("jobs", "cancel", "doomed", env=env).returncode == 0
    assert store.get_job(doomed).status == "cancelled"

    w1 = start("worker", "--poll", "0.5", "--max-jobs", "1", env=env, log=tmp_path / "w1.log")
    wait_for(
        "slow's first checkpoint", lambda: list((tmp_path / "slow").glob("checkpoint-*/trainer_state.json")), procs=[w1]
    )
    job = store.get_job(slow)
    assert job.status == "running" and job.attempts == 1 and job.pid and job.heartbeat_at
    assert listed(env)[slow]["stale"] is False
    # The machine dies: freeze the worker so it cannot react, kill the training process, then the worker.
    w1.send_signal(signal.SIGSTOP)
    os.kill(job.pid, signal.SIGKILL)
    w1.kill()
    w1.wait()
    row = listed(env)[slow]
    assert row["status"] == "running" and row["stale"] is True
    assert "STALE" in run("jobs", "list", env=env).stdout

    w2 = start("worker", "--poll", "0.5", "--idle-exit", "2", env=env, log=tmp_path / "w2.log")
    assert w2.wait(timeout=900) == 0, (tmp_path / "w2.log").read_text()
    log = (tmp_path / "w2.log").read_text()
    for job_id in (slow, quick):
        job = store.get_job(job_id)
        assert job.status == "succeeded", log
    assert store.get_job(slow).attempts == 2 and store.get_job(quick).attempts == 1
    history = statuses(store, slow)
    assert history == ["pending", "running", "pending", "running", "succeeded"], history
    assert "stale" in store.status_history(slow)[2]["message"]
    assert statuses(store, doomed) == ["pending", "cancelled"]
    assert list(queue.waiting(store, "layoutlm-training")) == []
    # The resumed run went on from the checkpoint: one run.json, all 10 epochs, best/ written.
    run_json = json.loads((tmp_path / "slow" / "run.json").read_text())
    assert run_json["job_id"] == slow and run_json["status"] == "succeeded"
    assert max(e["epoch"] for e in run_json["epoch_metrics"]) == 10
    assert (tmp_path / "slow" / "best" / "model.safetensors").exists()
    assert any("resumed" in log["message"] for log in store.logs(slow))
    val_epochs = sorted(m["epoch"] for m in store.metrics(slow, "val_f1"))
    assert val_epochs == list(range(1, 11)), val_epochs  # one continuous series, no epoch twice
    assert not (tmp_path / "doomed").exists()
    # Instance and InstanceJob items as the spec has them.
    instances = list(store.table.query("INSTANCE", index="GSITYPE"))
    assert instances and all(i["status"] == "stopped" and i["is_spot"] is False for i in instances)
    instance_jobs = [i for i in store.table.query("INSTANCE_JOB", index="GSITYPE")]
    by_job = {}
    for item in instance_jobs:
        by_job.setdefault(item["SK"].removeprefix("JOB#"), []).append(item["status"])
    assert by_job[quick] == ["completed"] and set(by_job[slow]) <= {"running", "completed"}


def test_spot_notice_then_sigterm_then_finished(tmp_path, fake_imds):  # noqa: F811
    """A spot notice from (fake) IMDS stops the worker: the job saves, ends interrupted, goes back to the
    queue, the worker exits 0. A second worker gets SIGTERM: same. A third finishes it."""
    endpoint, announce = fake_imds
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    env, store = env_for(uri), open_store(uri, AwsSettings.resolve())
    out = tmp_path / "spot"
    job_id = submit(env, "spot", out, "--epochs", "4", "--batch-size", "2")  # more steps: time to interrupt

    spot_env = {**env, "LAYOUTLM_IMDS_ENDPOINT": endpoint}
    # Look for the notice often: a tiny model's 4 epochs can end within the default 5 s.
    w1 = start("worker", "--poll", "0.5", "--spot-poll", "0.2", env=spot_env, log=tmp_path / "w1.log")
    wait_for("a checkpoint", lambda: list(out.glob("checkpoint-*/trainer_state.json")), procs=[w1])
    announce.set()
    assert w1.wait(timeout=300) == 0, (tmp_path / "w1.log").read_text()
    assert "spot interruption notice" in (tmp_path / "w1.log").read_text()
    job = store.get_job(job_id)
    assert job.status == "pending" and job.attempts == 1 and job.pid is None
    assert statuses(store, job_id) == ["pending", "running", "interrupted", "pending"]
    instance = store.table.get("INSTANCE#i-0123456789abcdef0", "INSTANCE")
    assert instance["is_spot"] is True and instance["instance_type"] == "g5.xlarge" and instance["status"] == "stopped"
    assert store.table.get("INSTANCE#i-0123456789abcdef0", f"JOB#{job_id}")["status"] == "failed"

    w2 = start("worker", "--poll", "0.5", env=env, log=tmp_path / "w2.log")
    # Signal once the second attempt has started training (its "resumed" log is written then).
    wait_for(
        "attempt 2 resumed",
        lambda: sum("resumed" in log["message"] for log in store.logs(job_id)) >= 1,
        procs=[w2],
    )
    w2.send_signal(signal.SIGTERM)
    assert w2.wait(timeout=300) == 0, (tmp_path / "w2.log").read_text()
    job = store.get_job(job_id)
    assert job.status == "pending" and job.attempts == 2
    assert statuses(store, job_id)[-2:] == ["interrupted", "pending"]

    w3 = run("worker", "--poll", "0.5", "--idle-exit", "1", env=env, timeout=900)
    assert w3.returncode == 0, w3.stdout + w3.stderr
    job = store.get_job(job_id)
    assert job.status == "succeeded" and job.attempts == 3
    history = statuses(store, job_id)
    assert history.count("interrupted") == 2 and history[-1] == "succeeded"
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "succeeded"
    assert [e["epoch"] for e in run_json["epoch_metrics"]] == [1, 2, 3, 4]  # stops mid-epoch evaluate nothing
    assert store.get_job(job_id).results["epochs_completed"] == 4


def test_local_train_sigkill_reads_stale_then_resume(tmp_path):
    """A SIGKILLed `train` does not read `running`: jobs list/show say STALE at once; `resume`
    continues it from its checkpoint to success."""
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    env, store = env_for(uri), open_store(uri, AwsSettings.resolve())
    out = tmp_path / "local"
    train = start(
        "train", "--job-name", "local", "--output-dir", out, *TRAIN, "--epochs", "3", env=env, log=tmp_path / "t.log"
    )
    # Killed as soon as a checkpoint folder appears, maybe half written: resume must fall back.
    wait_for("a checkpoint", lambda: list(out.glob("checkpoint-*")), procs=[train])
    train.kill()
    train.wait()
    (job,) = store.list_jobs()
    assert job.status == "running" and job.is_stale()
    shown = json.loads(run("jobs", "show", "local", "--json", env=env).stdout)
    assert shown["stale"] is True and shown["status"] == "running"
    refused = run("resume", "nonexistent", env=env)
    assert refused.returncode == 2 and "No job" in refused.stdout + refused.stderr

    done = run("resume", "local", env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    job = store.get_job(job.job_id)
    assert job.status == "succeeded" and job.attempts == 1 and not job.is_stale()
    assert statuses(store, job.job_id) == ["pending", "running", "running", "succeeded"]
    assert run("resume", "local", env=env).returncode == 2  # finished: nothing to resume
    run_json = json.loads((out / "run.json").read_text())
    assert max(e["epoch"] for e in run_json["epoch_metrics"]) == 3


def test_cancel_running_job_saves_and_ends_cancelled(tmp_path):
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    env, store = env_for(uri), open_store(uri, AwsSettings.resolve())
    out = tmp_path / "long"
    job_id = submit(env, "long", out, "--epochs", "20")
    worker = start("worker", "--poll", "0.5", "--idle-exit", "1", env=env, log=tmp_path / "w.log")
    wait_for("training to log", lambda: store.metrics(job_id, "train_loss"), procs=[worker])
    done = run("jobs", "cancel", "long", env=env)
    assert done.returncode == 0 and "cancel requested" in done.stdout
    assert worker.wait(timeout=300) == 0, (tmp_path / "w.log").read_text()
    job = store.get_job(job_id)
    assert job.status == "cancelled" and job.cancel_requested
    assert statuses(store, job_id) == ["pending", "running", "cancelled"]
    assert list(out.glob("checkpoint-*")), "a checkpoint is saved before it ends"
    assert json.loads((out / "run.json").read_text())["status"] == "cancelled"
    assert store.table.get(f"INSTANCE#{job.worker.split('/')[0]}", f"JOB#{job_id}")["status"] == "cancelled"
    refused = run("jobs", "cancel", job_id, env=env)
    assert refused.returncode == 2 and "already cancelled" in refused.stdout + refused.stderr


def test_gpus_run_one_job_per_gpu_side_by_side(tmp_path):
    """--gpus a,b claims two jobs at once, one child each with CUDA_VISIBLE_DEVICES set. The jobs here fail
    fast (their output dirs hold another run's files), which also shows a run refused before it records
    anything still ends `failed` with the reason."""
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    env, store = env_for(uri), open_store(uri, AwsSettings.resolve())
    ids = []
    for name in ("left", "right"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("someone else's files")
        ids.append(submit(env, name, tmp_path / name, "--epochs", "1"))
    done = run("worker", "--gpus", "0,1", "--poll", "0.5", "--max-jobs", "2", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    started = [i for i, line in enumerate(lines) if "attempt 1 on GPU" in line]
    ended = [i for i, line in enumerate(lines) if line.endswith(": failed")]
    assert len(started) == 2 and max(started) < min(ended), done.stdout  # both ran before either ended
    assert {"GPU 0" in lines[started[0]], "GPU 1" in lines[started[1]]} == {True}
    for job_id in ids:
        job = store.get_job(job_id)
        assert job.status == "failed" and job.attempts == 1
        assert "already holds" in store.status_history(job_id)[-1]["message"]
        assert any(log["log_level"] == "ERROR" for log in store.logs(job_id))
    assert (tmp_path / "left" / "notes.txt").exists()


def test_truncated_checkpoint_is_skipped(tmp_path):
    from receipt_layoutlm.training.artifacts import latest_checkpoint

    for step, state in ((6, '{"global_step": 6}'), (12, '{"global_st'), (18, None)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert latest_checkpoint(tmp_path).name == "checkpoint-6"
    assert latest_checkpoint(tmp_path / "none") is None


def test_job_moved_to_a_machine_without_its_files_continues_from_s3(aws_env, tmp_path):
    """The interrupted job's machine is gone with its output dir; the next worker fetches the newest
    uploaded checkpoint and run.json from S3 (moto) and continues the series instead of starting over."""
    import shutil

    import boto3

    bucket = "fleet-moves"
    boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    env, store = env_for(uri), open_store(uri, AwsSettings.resolve())
    out = tmp_path / "moved"
    job_id = submit(env, "moved", out, "--epochs", "3", "--output-s3-uri", f"s3://{bucket}/runs")
    w1 = start("worker", "--poll", "0.5", env=env, log=tmp_path / "w1.log")
    wait_for("an uploaded checkpoint", lambda: store.checkpoints(job_id), procs=[w1])
    w1.send_signal(signal.SIGTERM)
    assert w1.wait(timeout=300) == 0, (tmp_path / "w1.log").read_text()
    assert store.get_job(job_id).status == "pending"
    shutil.rmtree(out)  # the machine is gone

    w2 = run("worker", "--poll", "0.5", "--idle-exit", "1", env=env, timeout=900)
    assert w2.returncode == 0, w2.stdout + w2.stderr
    assert "fetched checkpoint-" in w2.stdout
    assert (out / "best" / "model.safetensors").exists()
    job = store.get_job(job_id)
    assert job.status == "succeeded" and job.attempts == 2
    assert any("resumed" in log["message"] for log in store.logs(job_id))
    assert sorted(m["epoch"] for m in store.metrics(job_id, "val_f1")) == [1, 2, 3]
    assert [e["epoch"] for e in json.loads((out / "run.json").read_text())["epoch_metrics"]] == [1, 2, 3]
