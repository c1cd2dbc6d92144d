"""The queue without training: conditional puts on both backends, workers racing for many jobs,
`submit` refusing what `train` refuses, `jobs cancel`, and what IMDS tells a worker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from receipt_layoutlm.aws import AwsSettings
from receipt_layoutlm.cli import cli
from receipt_layoutlm.fleet import queue
from receipt_layoutlm.fleet.imds import Imds
from receipt_layoutlm.store import ConditionFailed, LeaseLost, open_store


@pytest.fixture(params=["sqlite", "dynamodb"])
def store_uri(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return f"dynamodb://{request.getfixturevalue('fresh_table')}"


def test_conditional_put(store_uri):
    table = open_store(store_uri, AwsSettings.resolve()).table
    item = {"PK": "JOB#x", "SK": "JOB", "TYPE": "JOB", "status": "pending"}
    table.put(item)
    table.put({**item, "status": "running"}, expect={"status": "pending", "attempts": None})
    with pytest.raises(ConditionFailed):
        table.put({**item, "status": "running", "attempts": 2}, expect={"status": "pending"})
    with pytest.raises(ConditionFailed):
        table.put({**item, "status": "failed"}, expect={"status": "running", "attempts": 1})  # absent != 1
    assert table.get("JOB#x", "JOB")["status"] == "running"
    table.delete("JOB#x", "JOB")
    assert table.get("JOB#x", "JOB") is None


RACER = """
import sys
from receipt_layoutlm.fleet.queue import claim_next
from receipt_layoutlm.aws import AwsSettings
from receipt_layoutlm.store import open_store
store = open_store(sys.argv[1], AwsSettings.resolve())
sys.stdin.readline()  # start together
while (job := claim_next(store, "race", f"racer-{sys.argv[2]}", f"racer-{sys.argv[2]}")) is not None:
    print(job.job_id, flush=True)
"""


def test_workers_racing_never_share_a_job(store_uri, tmp_path):
    store = open_store(store_uri, AwsSettings.resolve())
    n_jobs, n_workers = 30, 4
    submitted = {
        queue.submit(store, f"race-{i}", {"i": i}, "race", priority="high" if i % 5 == 0 else "medium").job_id
        for i in range(n_jobs)
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, store_uri, str(w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(n_workers)
    ]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    claimed = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        claimed += out.split()
    assert sorted(claimed) == sorted(submitted), "every job claimed exactly once"
    assert list(queue.waiting(store, "race")) == []
    for job_id in submitted:
        job = store.get_job(job_id)
        assert job.status == "running" and job.attempts == 1 and job.worker.startswith("racer-")
        assert [s["status"] for s in store.status_history(job_id)] == ["pending", "running"]
        instance = job.worker.split("/")[0]
        assert store.table.get(f"INSTANCE#{instance}", f"JOB#{job_id}")["status"] == "running"
    queue_item = store.table.get("QUEUE#race", "QUEUE")
    assert queue_item["TYPE"] == "QUEUE" and queue_item["job_count"] == n_jobs


def test_claim_order_priority_then_age(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    low = queue.submit(store, "low", {}, "q", priority="low")
    old = queue.submit(store, "old", {}, "q")
    crit = queue.submit(store, "crit", {}, "q", priority="critical")
    new = queue.submit(store, "new", {}, "q")
    order = [queue.claim_next(store, "q", "w", "w").name for _ in range(4)]
    assert order == ["crit", "old", "new", "low"]
    assert queue.claim_next(store, "q", "w", "w") is None
    item = store.table.get("INSTANCE#w", f"JOB#{low.job_id}")
    assert item["GSI1PK"] == "JOB" and item["GSI1SK"] == f"JOB#{low.job_id}#INSTANCE#w"
    del old, crit, new


def test_release_requeues_then_fails_after_max_attempts(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = queue.submit(store, "flaky", {}, "q")
    for attempt in (1, 2):
        job = queue.claim_next(store, "q", "w", "w")
        assert job.attempts == attempt
        queue.release(store, job, "crashed", True, 3, "w")
        assert store.get_job(job.job_id).status == "pending"
    job = queue.claim_next(store, "q", "w", "w")
    # An interruption is not the job's fault: requeued even past --max-attempts.
    store.transition(job, "interrupted", {"status": "running"})
    queue.release(store, job, "interrupted", False, 3, "w")
    job = queue.claim_next(store, "q", "w", "w")
    queue.release(store, job, "crashed", True, 3, "w")
    job = store.get_job(job.job_id)
    assert job.status == "failed" and job.attempts == 4
    assert "gave up after 4 attempt(s)" in store.status_history(job.job_id)[-1]["message"]
    assert any(log["log_level"] == "ERROR" for log in store.logs(job.job_id))


def test_a_process_whose_job_was_claimed_again_stops_writing(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    queue.submit(store, "partitioned", {}, "q")
    mine = queue.claim_next(store, "q", "old", "old")
    assert store.heartbeat(mine) is False
    # Declared stale (its heartbeat too old) and claimed by another worker while it still runs.
    theirs = store.get_job(mine.job_id)
    queue.release(store, theirs, "stale", True, 3, "new")
    theirs = queue.claim_next(store, "q", "new", "new")
    with pytest.raises(LeaseLost):
        store.heartbeat(mine)
    with pytest.raises(LeaseLost):
        store.update_job(mine, status="succeeded")
    job = store.get_job(mine.job_id)
    assert job.status == "running" and job.worker == "new" and job.attempts == 2
    # A cancel request reaches the process that owns the job at its next heartbeat.
    assert queue.cancel(store, job) == "cancel requested"
    assert store.heartbeat(theirs) is True and store.get_job(job.job_id).cancel_requested


TRAIN_ARGS = ["--dataset", "demo:12", "--pretrained", "tiny", "--max-seq-length", "64", "--window-overlap", "16"]


def test_submit_refuses_what_train_refuses_and_writes_nothing(tmp_path):
    runner = CliRunner()
    env = {"LAYOUTLM_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}", "DYNAMO_TABLE_NAME": None}
    for bad, words in [
        (["--allowed-label", "FOO"], "is not a label"),
        (["--lr", "0"], "must be positive"),
        (["--dataset", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
    ]:
        result = runner.invoke(cli, ["submit", "--job-name", "bad", *TRAIN_ARGS, *bad], env=env)
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output
    assert (
        not (tmp_path / "jobs.db").exists()
        or open_store(env["LAYOUTLM_JOB_STORE"], AwsSettings.resolve()).list_jobs() == []
    )

    result = runner.invoke(cli, ["submit", "--job-name", "ok", *TRAIN_ARGS, "--epochs", "2", "--queue", "q"], env=env)
    assert result.exit_code == 0, result.output
    job_id = result.output.strip().splitlines()[-1]
    store = open_store(env["LAYOUTLM_JOB_STORE"], AwsSettings.resolve())
    job = store.get_job(job_id)
    assert job.status == "pending" and job.queue == "q" and job.host is None
    assert job.job_config["epochs"] == 2 and job.job_config["max_seq_length"] == 64  # train's config_record
    assert job.job_config["output_dir"].endswith("/ok")
    (entry,) = queue.waiting(store, "q")
    assert entry["TYPE"] == "QUEUE_JOB" and entry["GSI1SK"] == f"JOB#{job_id}#QUEUE#q" and entry["priority"] == "medium"
    submit_flags = {p.name for p in cli.commands["submit"].params}
    train_flags = {p.name for p in cli.commands["train"].params}
    assert train_flags - submit_flags == {"resume", "overwrite_output_dir"}


def test_cancel_pending_and_finished(tmp_path):
    runner = CliRunner()
    env = {"LAYOUTLM_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}
    store = open_store(env["LAYOUTLM_JOB_STORE"], AwsSettings.resolve())
    job = queue.submit(store, "waiting", {}, "q")
    result = runner.invoke(cli, ["jobs", "cancel", "waiting"], env=env)
    assert result.exit_code == 0 and "cancelled job" in result.output
    assert store.get_job(job.job_id).status == "cancelled" and list(queue.waiting(store, "q")) == []
    assert queue.claim_next(store, "q", "w", "w") is None
    result = runner.invoke(cli, ["jobs", "cancel", job.job_id], env=env)
    assert result.exit_code == 2 and "already cancelled; there is nothing to cancel" in result.output
    assert [s["status"] for s in store.status_history(job.job_id)] == ["pending", "cancelled"]


class FakeImds(BaseHTTPRequestHandler):
    """IMDSv2 on 127.0.0.1: a token first, then metadata; a spot notice once `announce` is set."""

    announce = threading.Event()
    values = {
        "instance-id": "i-0123456789abcdef0",
        "instance-type": "g5.xlarge",
        "placement/availability-zone": "us-east-1b",
        "local-ipv4": "10.0.0.7",
        "instance-life-cycle": "spot",
    }

    def do_PUT(self):
        self._send(200, "token-1" if self.path == "/latest/api/token" else "")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
            return self._send(401, "")
        path = self.path.removeprefix("/latest/meta-data/")
        if path == "spot/instance-action":
            if self.announce.is_set():
                return self._send(200, json.dumps({"action": "terminate", "time": "2026-01-01T00:02:00Z"}))
            return self._send(404, "")
        if path in self.values:
            return self._send(200, self.values[path])
        self._send(404, "")

    def _send(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_imds():
    FakeImds.announce.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", FakeImds.announce
    server.shutdown()


def test_imds_describes_the_instance_and_its_spot_notice(fake_imds):
    endpoint, announce = fake_imds
    imds = Imds(endpoint)
    info = imds.describe()
    assert (info.instance_id, info.instance_type, info.is_spot, info.on_ec2) == (
        "i-0123456789abcdef0",
        "g5.xlarge",
        True,
        True,
    )
    assert info.availability_zone == "us-east-1b" and info.ip_address == "10.0.0.7"
    assert imds.spot_interruption() is None
    announce.set()
    assert imds.spot_interruption()["action"] == "terminate"
    off_ec2 = Imds("http://127.0.0.1:9").describe()  # nothing listens there
    assert not off_ec2.on_ec2 and off_ec2.instance_id
