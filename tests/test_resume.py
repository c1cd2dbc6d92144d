"""A SIGTERM (spot interruption) saves a checkpoint and marks the job interrupted;
--resume continues the same job to success; a changed label set is refused."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from receipt_layoutlm.store import open_store

ARGS = [
    "--job-name",
    "spot",
    "--dataset",
    "demo:60",
    "--pretrained",
    "tiny",
    "--epochs",
    "3",
    "--batch-size",
    "2",
    "--merge-amounts",
    "--allowed-label",
    "DATE",
    "--allowed-label",
    "AMOUNT",
]


def cli(*args, env):
    return [sys.executable, "-c", "from receipt_layoutlm.cli import main; main()", *args]


@pytest.mark.slow
def test_sigterm_then_resume(tmp_path):
    env = {**os.environ, "LAYOUTLM_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}
    env.pop("DYNAMO_TABLE_NAME", None)
    out = tmp_path / "spot"
    proc = subprocess.Popen(
        cli("train", *ARGS, "--output-dir", out, env=env),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 240
    # Wait until the first epoch's checkpoint exists, so the stop comes mid-training.
    while time.time() < deadline and not list(out.glob("checkpoint-*")) and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 2, output
    assert "interrupted" in output and "--resume" in output and "Traceback" not in output

    store = open_store(env["LAYOUTLM_JOB_STORE"])
    (job,) = store.list_jobs("interrupted")
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "interrupted" and run_json["job_id"] == job.job_id
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert steps and (out / "best" / "model.safetensors").exists(), "best/ is written even when stopped"

    # Resuming with other labels would load an incompatible checkpoint: refused, nothing lost.
    changed = subprocess.run(
        cli("train", *ARGS, "--allowed-label", "TIME", "--output-dir", out, "--resume", env=env),
        env=env,
        text=True,
        capture_output=True,
        timeout=240,
    )
    assert changed.returncode == 2 and "resume with the original flags" in changed.stdout + changed.stderr
    assert sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")) == steps
    # A refused command leaves the job it refused as it was (issue 6, item 7).
    assert store.get_job(job.job_id).status == "interrupted"
    assert json.loads((out / "run.json").read_text()) == run_json
    other_data = subprocess.run(
        cli("train", *ARGS, "--dataset", "demo:61", "--output-dir", out, "--resume", env=env),
        env=env,
        text=True,
        capture_output=True,
        timeout=240,
    )
    assert other_data.returncode == 2 and "--dataset 'demo:60', not 'demo:61'" in other_data.stderr
    assert store.get_job(job.job_id).status == "interrupted"

    done = subprocess.run(
        cli("train", *ARGS, "--output-dir", out, "--resume", env=env),
        env=env,
        text=True,
        capture_output=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job = store.get_job(job.job_id)
    assert job.status == "succeeded" and store.list_jobs("interrupted") == []
    history = [s["status"] for s in store.status_history(job.job_id)]
    assert history[:3] == ["pending", "running", "interrupted"] and history[-2:] == ["running", "succeeded"]
    run_json = json.loads((out / "run.json").read_text())
    assert "error" not in run_json and run_json["status"] == "succeeded"
    # One continuous series: the stop does not evaluate a partial epoch that the resumed run evaluates again.
    assert [e["epoch"] for e in run_json["epoch_metrics"]] == [1, 2, 3]
    assert [m["epoch"] for m in store.metrics(job.job_id, "val_f1")] == [1, 2, 3]
    assert job.results["epochs_completed"] == 3 and run_json["summary"]["epochs_completed"] == 3
    assert len(store.list_jobs()) == 1  # one job, resumed, not a new one
