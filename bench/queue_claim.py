"""Queue claiming against DynamoDB Local, no training: jobs claimed per second and the time from
`submit` to `running`, with 1, 4 and 16 workers (threads, each with its own client, as separate
machines would have). Ratios are against the 1-worker run of the same process.

    python bench/queue_claim.py [--jobs 96] [--poll 0.5]

1. drain: JOBS jobs are queued first, then N workers claim until the queue is empty; claims/s.
2. latency: N idle workers poll every POLL s while 20 jobs are submitted one every 0.25 s; for each
   job, running's JobStatus time minus created_at (median and max).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aws_servers  # noqa: E402

from receipt_layoutlm.aws import AwsSettings  # noqa: E402
from receipt_layoutlm.fleet.queue import claim_next, submit  # noqa: E402
from receipt_layoutlm.store import open_store  # noqa: E402
from receipt_layoutlm.store.dynamodb import create_table  # noqa: E402

AWS = AwsSettings.resolve()  # a script: its settings come from the environment once, here


def fresh_store():
    name = f"bench-{uuid.uuid4().hex[:8]}"
    create_table(name, AWS)
    return f"dynamodb://{name}"


def drain(uri: str, workers: int, jobs: int) -> tuple[float, int]:
    store = open_store(uri, AWS)
    for i in range(jobs):
        submit(store, f"job-{i}", {"i": i}, "bench")
    claimed: list[str] = []
    lock = threading.Lock()

    def work(w: int) -> None:
        own = open_store(uri, AWS)
        while (job := claim_next(own, "bench", f"w{w}", f"w{w}")) is not None:
            with lock:
                claimed.append(job.job_id)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert len(claimed) == len(set(claimed)) == jobs, "a job was claimed twice or lost"
    return jobs / elapsed, len(claimed)


def latency(uri: str, workers: int, poll: float, n: int = 20) -> list[float]:
    store = open_store(uri, AWS)
    stop = threading.Event()

    def work(w: int) -> None:
        own = open_store(uri, AWS)
        while not stop.is_set():
            if claim_next(own, "bench", f"w{w}", f"w{w}") is None:
                stop.wait(poll)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    ids = []
    for i in range(n):
        ids.append(submit(store, f"late-{i}", {"i": i}, "bench").job_id)
        time.sleep(0.25)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(store.get_job(j).status != "running" for j in ids):
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    waits = []
    for job_id in ids:
        job = store.get_job(job_id)
        running = [s for s in store.status_history(job_id) if s["status"] == "running"][0]
        waits.append(
            (datetime.fromisoformat(running["updated_at"]) - datetime.fromisoformat(job.created_at)).total_seconds()
        )
    return waits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=96)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    proc, url = aws_servers.start_dynamodb_local()
    os.environ["DYNAMODB_ENDPOINT_URL"] = url
    try:
        drain(fresh_store(), 1, 8)  # warm up the emulator's JIT
        base = None
        print(f"DynamoDB Local, {os.cpu_count()} CPUs; {args.jobs} queued jobs; poll {args.poll} s")
        print("workers  claims/s  ratio  submit->running median  max")
        for workers in (1, 4, 16):
            rate, _ = drain(fresh_store(), workers, args.jobs)
            base = base or rate
            waits = latency(fresh_store(), workers, args.poll)
            print(
                f"{workers:7d}  {rate:8.1f}  {rate / base:5.2f}  {statistics.median(waits):20.3f} s  {max(waits):.3f} s"
            )
    finally:
        aws_servers.stop(proc)


if __name__ == "__main__":
    main()
