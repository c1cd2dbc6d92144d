"""Store faults never kill training (issue 11, item 6): a locked sqlite file is retried, writes made while
the store is away go to the run's journal and reach the store later, in order, once each, without setting
back a job another process moved on. Real locks here; a stopped DynamoDB Local in test_fleet_outages.py."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time

import pytest

from receipt_layoutlm.store import StoreUnavailable, open_store
from receipt_layoutlm.store import sqlite as sqlite_backend
from receipt_layoutlm.store.journal import Journal


@pytest.fixture
def quick_locks(monkeypatch):
    """sqlite gives up on a held lock after 50 ms per attempt, 3 attempts: the tests wait little."""
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(sqlite_backend, "LOCKED_ATTEMPTS", 3)


def hold_write_lock(path):
    """Another process's writer: holds the database's write lock until released."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_locked_sqlite_is_retried_then_unavailable(tmp_path, quick_locks, monkeypatch):
    db = tmp_path / "jobs.db"
    store = open_store(f"sqlite:///{db}")
    job = store.create_job("locked", {})
    other = hold_write_lock(db)
    # Released during the retries (8 attempts of 50 ms each at least): a retry after backoff gets through.
    monkeypatch.setattr(sqlite_backend, "LOCKED_ATTEMPTS", 8)
    threading.Timer(0.05, other.rollback).start()
    store.add_log(job.job_id, "INFO", "after the lock")
    monkeypatch.setattr(sqlite_backend, "LOCKED_ATTEMPTS", 3)
    assert [log["message"] for log in store.logs(job.job_id)] == ["after the lock"]

    other = hold_write_lock(db)
    try:
        with pytest.raises(StoreUnavailable, match="stayed locked by another process"):
            store.add_log(job.job_id, "INFO", "never")
    finally:
        other.rollback()
    assert len(store.logs(job.job_id)) == 1


def test_journal_while_locked_then_flushed_in_order_once(tmp_path, quick_locks):
    from receipt_layoutlm.training.recording import Recorder

    db = tmp_path / "jobs.db"
    store = open_store(f"sqlite:///{db}")
    job = store.create_job("journaled", {})
    journal = Journal.of(tmp_path)
    recorder = Recorder(store, job, None, journal=journal)
    recorder.status("running", message="training started")
    recorder.metrics([{"name": "val_f1", "value": 0.25, "epoch": 1, "step": 4}])
    assert not journal.pending

    other = hold_write_lock(db)
    recorder.metrics([{"name": "val_f1", "value": 0.5, "epoch": 2, "step": 8}])
    recorder.log("INFO", "written while locked")
    assert not recorder.heartbeat()  # skipped, training goes on
    recorder.status("succeeded", message="done", best_f1=0.5)
    assert journal.pending and len(journal.entries()) == 3  # metric, log, Job with its JobStatus row
    assert recorder.flush(force=True) is False  # still locked: kept
    other.rollback()

    assert store.get_job(job.job_id).status == "running"
    assert [m["epoch"] for m in store.metrics(job.job_id, "val_f1")] == [1]
    copy = tmp_path / "journal.copy"
    shutil.copy(journal.path, copy)
    assert recorder.flush(force=True) is True
    assert not journal.path.exists()

    stored = store.get_job(job.job_id)
    assert stored.status == "succeeded" and stored.results["best_f1"] == 0.5
    assert [s["status"] for s in store.status_history(job.job_id)] == ["pending", "running", "succeeded"]
    assert [m["epoch"] for m in store.metrics(job.job_id, "val_f1")] == [1, 2]
    assert [log["message"] for log in store.logs(job.job_id)] == ["written while locked"]

    # A replay of lines that already reached the store (a flush cut short) overwrites them: no second row.
    shutil.copy(copy, journal.path)
    flushed = journal.flush(store)
    assert flushed.written == 3 and flushed.dropped == 0
    assert [m["epoch"] for m in store.metrics(job.job_id, "val_f1")] == [1, 2]
    assert len(store.status_history(job.job_id)) == 3 and len(store.logs(job.job_id)) == 1


def test_journaled_status_does_not_set_back_a_job_moved_on(tmp_path, quick_locks):
    """The run journals `succeeded` while the store is locked; meanwhile another process declares the job
    stale and fails it. The flush writes the run's metrics but leaves the job `failed`."""
    from receipt_layoutlm.training.recording import Recorder

    db = tmp_path / "jobs.db"
    store = open_store(f"sqlite:///{db}")
    job = store.create_job("moved-on", {})
    recorder = Recorder(store, job, None, journal=Journal.of(tmp_path))
    recorder.status("running")
    other = hold_write_lock(db)
    recorder.metrics([{"name": "val_f1", "value": 0.5, "epoch": 1, "step": 4}])
    recorder.status("succeeded", message="done")
    other.rollback()

    elsewhere = open_store(f"sqlite:///{db}")
    stale = elsewhere.get_job(job.job_id)
    elsewhere.transition(stale, "failed", {"status": "running"}, message="stale: gave up")
    time.sleep(0.01)
    flushed = Journal.of(tmp_path).flush(store)
    assert flushed.dropped == 1 and flushed.written == 1  # the metric; the Job and its JobStatus row not
    assert store.get_job(job.job_id).status == "failed"
    assert [s["status"] for s in store.status_history(job.job_id)] == ["pending", "running", "failed"]
    assert [m["epoch"] for m in store.metrics(job.job_id, "val_f1")] == [1]


class ThrottlingProxy:
    """An HTTP proxy in front of DynamoDB Local that answers the next `failures` PutItem calls itself with
    DynamoDB's own errors (HTTP 500 InternalServerError, then 400 ProvisionedThroughputExceededException,
    alternating), and forwards everything else."""

    def __init__(self, target: str):
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlparse

        proxy = self
        self.failures, self.put_calls = 0, 0
        host, port = urlparse(target).hostname, urlparse(target).port

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("X-Amz-Target", "").endswith(".PutItem"):
                    proxy.put_calls += 1
                    if proxy.failures > 0:
                        proxy.failures -= 1
                        error, status = (
                            ("InternalServerError", 500)
                            if proxy.failures % 2
                            else ("ProvisionedThroughputExceededException", 400)
                        )
                        payload = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{error}", "message": "x"})
                        return self.answer(status, {"Content-Type": "application/x-amz-json-1.0"}, payload.encode())
                upstream = http.client.HTTPConnection(host, port, timeout=30)
                upstream.request("POST", self.path, body, dict(self.headers))
                reply = upstream.getresponse()
                self.answer(reply.status, dict(reply.getheaders()), reply.read())

            def answer(self, status, headers, payload):
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_dynamodb_throttling_and_5xx_are_retried_then_unavailable(fresh_table, aws_env, monkeypatch):
    from dataclasses import replace

    from receipt_layoutlm.store import dynamodb as dynamodb_backend

    monkeypatch.setattr(dynamodb_backend, "RETRIES", 2)  # 3 attempts: keeps the giving-up case short
    proxy = ThrottlingProxy(aws_env.dynamodb_endpoint)
    try:
        store = open_store(f"dynamodb://{fresh_table}", replace(aws_env, dynamodb_endpoint=proxy.url))
        job = store.create_job("throttled", {})
        proxy.failures, proxy.put_calls = 2, 0  # a 500, then a throttle: the third attempt gets through
        store.add_log(job.job_id, "INFO", "after two refusals")
        assert proxy.put_calls == 3
        assert [log["message"] for log in store.logs(job.job_id)] == ["after two refusals"]

        proxy.failures, proxy.put_calls = 100, 0
        with pytest.raises(StoreUnavailable, match="ProvisionedThroughputExceeded|InternalServerError"):
            store.add_log(job.job_id, "INFO", "never")
        assert proxy.put_calls == 3
        assert len(store.logs(job.job_id)) == 1
    finally:
        proxy.close()


def test_flush_journal_command(tmp_path, quick_locks):
    """What a run left in its journal (the store was away when it ended) is written by `jobs flush-journal`,
    which refuses another store than the run's and is harmless to run twice."""
    from conftest import one_sentence_error, run_cli

    from receipt_layoutlm.training.artifacts import RunFile
    from receipt_layoutlm.training.recording import Recorder

    db, out = tmp_path / "jobs.db", tmp_path / "run"
    out.mkdir()
    uri = f"sqlite:///{db}"
    store = open_store(uri)
    job = store.create_job("ended-away", {})
    RunFile(out / "run.json", {"job_id": job.job_id, "job_name": "ended-away", "job_store": uri}).save()
    recorder = Recorder(store, job, None, journal=Journal.of(out))
    recorder.status("running")
    other = hold_write_lock(db)
    recorder.metrics([{"name": "val_f1", "value": 0.5, "epoch": 1, "step": 4}])
    recorder.status("succeeded", message="done")
    other.rollback()

    refused = run_cli("jobs", "flush-journal", out, "--job-store", f"sqlite:///{tmp_path / 'other.db'}")
    one_sentence_error(refused, f"--job-store {uri}")
    assert Journal.of(out).pending and store.get_job(job.job_id).status == "running"

    done = run_cli("jobs", "flush-journal", out, "--job-store", uri)
    assert done.exit_code == 0 and "flushed 2 journaled write(s)" in done.output, done.output
    assert store.get_job(job.job_id).status == "succeeded" and not (out / "journal.jsonl").exists()
    again = run_cli("jobs", "flush-journal", out, "--job-store", uri)
    assert again.exit_code == 0 and "no journal" in again.output
    assert [m["epoch"] for m in store.metrics(job.job_id, "val_f1")] == [1]
