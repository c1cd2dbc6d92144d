"""Several processes in one job: `torchrun --nproc_per_node 2` (gloo on CPU) with a tiny model.

One Job, rank 0 alone writing, the validation F1 recorded under DDP equal to a single-process
evaluation of best/ on the same validation receipts, and a cancel request (seen by rank 0 alone)
stopping every rank at the same step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from receipt_layoutlm.fleet import queue
from receipt_layoutlm.inference.evaluate import evaluate_model
from receipt_layoutlm.inference.tagger import ReceiptTagger
from receipt_layoutlm.sources import load_receipts
from receipt_layoutlm.store import open_store

TRAIN = ["--pretrained", "tiny", "--max-seq-length", "64"]


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] + [
        "-m",
        "receipt_layoutlm.cli",
        *map(str, args),
    ]


def env_for(store_uri: str) -> dict:
    env = {**os.environ, "LAYOUTLM_JOB_STORE": store_uri, "OMP_NUM_THREADS": "1"}
    for name in ("DYNAMO_TABLE_NAME", "LAYOUTLM_TRAINING_BUCKET"):
        env.pop(name, None)
    return env


@pytest.mark.slow
def test_two_processes_record_one_job_and_the_f1_that_evaluate_finds(tmp_path):
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    out = tmp_path / "ddp"
    done = subprocess.run(
        # With these settings, reading a word from another window than evaluate does changed the F1.
        torchrun(
            "train",
            "--job-name",
            "ddp",
            "--dataset",
            "demo:80",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--output-dir",
            out,
            *TRAIN,
        ),
        env=env_for(uri),
        text=True,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    store = open_store(uri)
    (job,) = store.list_jobs()
    assert job.status == "succeeded" and job.job_config["environment"]["world_size"] == 2
    assert [s["status"] for s in store.status_history(job.job_id)] == ["pending", "running", "succeeded"]
    # Rank 0 alone writes: every metric once per epoch and step, one run_config, one summary.
    metrics = store.metrics(job.job_id)
    assert [m["epoch"] for m in store.metrics(job.job_id, "val_f1")] == [1, 2]
    repeated = [k for k, n in Counter((m["metric_name"], m["epoch"], m["step"]) for m in metrics).items() if n > 1]
    assert repeated == []
    messages = [json.loads(e["message"]).get("type") for e in store.logs(job.job_id) if e["message"].startswith("{")]
    assert messages.count("run_config") == 1 and messages.count("run_summary") == 1
    run = json.loads((out / "run.json").read_text())
    assert run["job_id"] == job.job_id and [e["epoch"] for e in run["epoch_metrics"]] == [1, 2]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("checkpoint-")) == ["best", "run.json"]

    # The F1 recorded under DDP is the one a single process finds with best/ on the same receipts.
    val_ids = set(run["split"]["val_receipt_ids"])
    receipts = [r for r in load_receipts("demo:80", seed=run["config"]["seed"])[0] if r.id in val_ids]
    assert len(receipts) == len(val_ids) == run["dataset"]["val"]["receipts"]
    scores = evaluate_model(ReceiptTagger.from_pretrained(out / "best", batch_size=3), receipts)
    assert scores["micro"]["f1"] == pytest.approx(job.results["best_f1"], abs=1e-9)
    assert max(m["value"] for m in store.metrics(job.job_id, "val_f1")) == pytest.approx(scores["micro"]["f1"])


@pytest.mark.slow
def test_a_cancel_seen_by_rank_0_stops_every_rank(tmp_path):
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    out = tmp_path / "long"
    log = tmp_path / "torchrun.log"
    args = (
        "train",
        "--job-name",
        "long",
        "--dataset",
        "demo:40",
        "--epochs",
        "200",
        "--batch-size",
        "8",
        "--output-dir",
        out,
        *TRAIN,
    )
    proc = subprocess.Popen(torchrun(*args), env=env_for(uri), stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        store = open_store(uri)
        deadline = time.monotonic() + 300
        while not (store.list_jobs("running") and store.metrics(store.list_jobs()[0].job_id, "val_f1")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the job never finished its first epoch"
            time.sleep(0.2)
        (job,) = store.list_jobs()
        assert queue.cancel(store, job) == "cancel requested"
        proc.wait(timeout=120)  # a rank left training alone would wait forever in its next all-reduce
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    job = store.get_job(job.job_id)
    assert job.status == "cancelled", output[-3000:]
    # Both ranks stopped on the cancel (neither was killed by torchrun for the other's exit).
    assert output.count("Training cancelled (on request") == 2, output[-3000:]
    steps = sorted(int(p.name.split("-")[1]) for p in Path(out).glob("checkpoint-*"))
    assert steps and (out / "best").is_dir()
    assert json.loads((out / "run.json").read_text())["status"] == "cancelled"


@pytest.mark.slow
def test_sigterm_to_torchrun_interrupts_the_job_with_a_checkpoint(tmp_path):
    import signal

    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    out = tmp_path / "term"
    log = tmp_path / "torchrun.log"
    args = ("train", "--job-name", "term", "--dataset", "demo:40", "--epochs", "200", "--batch-size", "8")
    proc = subprocess.Popen(
        torchrun(*args, "--output-dir", out, *TRAIN), env=env_for(uri), stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        store = open_store(uri)
        deadline = time.monotonic() + 300
        while not (store.list_jobs("running") and store.metrics(store.list_jobs()[0].job_id, "val_f1")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the job never finished its first epoch"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it to both ranks, each at its own moment
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    (job,) = store.list_jobs()
    assert job.status == "interrupted", output[-3000:]
    assert output.count("Training interrupted") == 2, output[-3000:]
    run = json.loads((out / "run.json").read_text())
    last = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert (out / f"checkpoint-{last}" / "trainer_state.json").is_file() and run["status"] == "interrupted"
