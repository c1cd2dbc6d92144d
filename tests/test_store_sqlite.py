"""The embedded job store holds the items of docs/job-store.md."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from receipt_layoutlm.errors import UserError
from receipt_layoutlm.store import ConditionFailed, open_store
from receipt_layoutlm.store.sqlite import SqliteTable

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture
def store(tmp_path):
    return open_store(f"sqlite:///{tmp_path / 'jobs.db'}")


def test_job_lifecycle_items_and_queries(store):
    job = store.create_job(
        "receipts-validate", {"lr": 6e-5, "merge_amounts": True, "allowed_labels": ["DATE"], "o_entity_ratio": None}
    )
    item = store.table.get(f"JOB#{job.job_id}", "JOB")
    assert item["TYPE"] == "JOB" and item["GSI1PK"] == "STATUS#pending" and TS.match(item["created_at"])
    assert item["GSI1SK"] == f"CREATED#{item['created_at']}" and item["GSI2PK"] == "JOB_NAME#receipts-validate"
    assert item["job_config"] == {"lr": 6e-5, "merge_amounts": True, "allowed_labels": ["DATE"], "o_entity_ratio": None}
    assert "results" not in item and "storage" not in item and "job_id" not in item
    store.update_job(job, status="running")
    job.results.update(best_f1=0.5, label_list=["O", "B-DATE", "I-DATE"])
    store.update_job(job, status="succeeded")
    assert [j.job_id for j in store.list_jobs("succeeded")] == [job.job_id]
    assert store.list_jobs("running") == [] and store.list_jobs("pending") == []
    history = [s["status"] for s in store.status_history(job.job_id)]
    assert history == ["pending", "running", "succeeded"]
    assert store.get_job(job.job_id).results["best_f1"] == 0.5
    # same name twice -> distinct ids, newest first by name
    second = store.create_job("receipts-validate", {})
    assert second.job_id != job.job_id
    assert [j.job_id for j in store.jobs_by_name("receipts-validate")] == [second.job_id, job.job_id]
    assert store.resolve("receipts-validate").job_id == second.job_id
    assert store.resolve(job.job_id).job_id == job.job_id
    with pytest.raises(UserError, match="No job"):
        store.resolve("nope")


def test_metrics_by_name_need_the_trailing_hash(store):
    job = store.create_job("m", {})
    store.add_metrics(
        job.job_id,
        [
            {"name": "val_f1", "value": 0.1, "step": 10, "epoch": 1, "unit": "ratio"},
            {"name": "val_f1_macro", "value": 0.2, "step": 10, "epoch": 1},
            {"name": "val_f1", "value": 0.3, "step": 20, "epoch": 2, "unit": "ratio"},
            {"name": "confusion", "value": {"DATE": {"DATE": 3}}, "unit": "matrix"},
        ],
    )
    rows = store.metrics(job.job_id, "val_f1")
    assert [r["value"] for r in rows] == [0.1, 0.3] and [r["epoch"] for r in rows] == [1, 2]
    assert all(r["SK"].startswith("METRIC#val_f1#") and TS.match(r["timestamp"]) for r in rows)
    assert rows[0]["GSI2PK"] == "METRIC#val_f1" and rows[0]["GSI2SK"] == f"JOB#{job.job_id}#{rows[0]['timestamp']}"
    assert len({r["SK"] for r in store.metrics(job.job_id)}) == 4
    assert store.metrics(job.job_id, "confusion")[0]["value"] == {"DATE": {"DATE": 3}}


def test_values_dynamodb_cannot_hold_are_refused(store):
    job = store.create_job("nan", {})
    with pytest.raises(ValueError, match="finite"):
        store.add_metrics(job.job_id, [{"name": "val_f1", "value": float("nan")}])


def test_logs_and_unknown_store_uri(store):
    job = store.create_job("l", {})
    store.add_log(job.job_id, "INFO", {"type": "run_config", "data": {"a": 1}})
    (log,) = store.logs(job.job_id)
    assert (
        log["TYPE"] == "JOB_LOG" and log["log_level"] == "INFO" and log["message"].startswith('{"type": "run_config"')
    )
    assert log["GSI1PK"] == "LOG"
    with pytest.raises(UserError, match="Unknown job store"):
        open_store("postgres://x")


def test_sqlite_claims_are_atomic_across_connections(tmp_path):
    """Eight connections race to move one pending item to running: exactly one wins."""
    path = tmp_path / "jobs.db"
    SqliteTable(path).put({"PK": "JOB#r", "SK": "JOB", "status": "pending"})
    n = 8
    barrier = threading.Barrier(n)

    def claim(i: int) -> bool:
        table = SqliteTable(path)  # one connection per thread, as separate processes have
        barrier.wait()
        try:
            table.put({"PK": "JOB#r", "SK": "JOB", "status": "running", "by": i}, expect={"status": "pending"})
            return True
        except ConditionFailed:
            return False

    with ThreadPoolExecutor(n) as pool:
        won = [i for i, ok in enumerate(pool.map(claim, range(n))) if ok]
    assert len(won) == 1
    assert SqliteTable(path).get("JOB#r", "JOB")["by"] == won[0]


def test_a_live_pid_with_an_old_heartbeat_is_stale_on_its_own_host():
    """A pid is reused: on the job's own host a running process with its pid does not keep a job whose
    heartbeat stopped alive for ever; past the lease it is STALE, as anywhere else."""
    import os
    import socket
    from datetime import UTC, datetime, timedelta

    from receipt_layoutlm.store import Job

    def job(heartbeat_age_s: float, pid: int) -> Job:
        at = (datetime.now(UTC) - timedelta(seconds=heartbeat_age_s)).isoformat()
        return Job("j", "j", "running", at, host=socket.gethostname(), pid=pid, heartbeat_at=at, lease_seconds=60)

    assert not job(5, os.getpid()).is_stale()  # alive and beating
    assert job(120, os.getpid()).is_stale()  # the pid runs (another process now), but no heartbeat for 2 min
    assert job(5, 2**22 + 12345).is_stale()  # the pid is gone: stale at once
