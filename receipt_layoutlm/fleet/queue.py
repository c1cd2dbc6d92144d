"""The job store as a queue: Queue and QueueJob items (docs/operations.md and docs/job-store.md),
claiming by a conditional write on the Job's status, requeueing, cancelling.

A QueueJob item exists while its job waits: `submit` and a requeue write it, the worker that claims
the job deletes it. Whoever finds one for a job that is no longer pending skips it (and removes it
once the job has finished). Every status change goes through `JobStore.transition`, a conditional
put: of two workers racing for one job, exactly one wins.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from ..store import DEFAULT_LEASE_SECONDS, PRIORITIES, ConditionFailed, ItemExists, Job, JobStore, now_iso

DEFAULT_QUEUE = "layoutlm-training"
DEFAULT_MAX_ATTEMPTS = 3
FINISHED = ("succeeded", "failed", "cancelled")
PRIORITY_RANK = {p: i for i, p in enumerate(PRIORITIES)}  # critical runs before high before ...


def queue_key(queue: str) -> str:
    return f"QUEUE#{queue}"


def ensure_queue(store: JobStore, queue: str, description: str = "") -> None:
    """The Queue item, written once (a concurrent `submit` may have written it first)."""
    with contextlib.suppress(ItemExists):
        store.table.put(
            {
                "PK": queue_key(queue),
                "SK": "QUEUE",
                "TYPE": "QUEUE",
                "GSI1PK": "QUEUE",
                "GSI1SK": queue_key(queue),
                "description": description or f"layoutlm-cli training jobs ({queue})",
                "created_at": now_iso(),
                "max_concurrent_jobs": 0,  # 0: as many as there are workers
                "priority": "medium",
                "job_count": 0,
            },
            must_not_exist=True,
        )


def _count_job(store: JobStore, queue: str) -> None:
    """job_count + 1 (jobs ever submitted to the queue), as a compare-and-set loop on the Queue item."""
    for _ in range(20):
        item = store.table.get(queue_key(queue), "QUEUE")
        try:
            store.table.put({**item, "job_count": item["job_count"] + 1}, expect={"job_count": item["job_count"]})
            return
        except ConditionFailed:
            continue


def position_of(job: Job) -> int:
    """Lower runs first: the job's creation time in microseconds, so a requeued job keeps its place."""
    return int(datetime.fromisoformat(job.created_at).timestamp() * 1_000_000)


def enqueue(store: JobStore, job: Job) -> None:
    store.table.put(
        {
            "PK": queue_key(job.queue),
            "SK": f"JOB#{job.job_id}",
            "TYPE": "QUEUE_JOB",
            "GSI1PK": "JOB",
            "GSI1SK": f"JOB#{job.job_id}#QUEUE#{job.queue}",
            "enqueued_at": now_iso(),
            "priority": job.priority,
            "position": position_of(job),
        }
    )


def dequeue(store: JobStore, job: Job) -> None:
    store.table.delete(queue_key(job.queue), f"JOB#{job.job_id}")


def submit(store: JobStore, name: str, job_config: dict, queue: str, **job_fields) -> Job:
    """A pending Job plus its QueueJob (and the Queue, the first time)."""
    ensure_queue(store, queue)
    job = store.create_job(name, job_config, queue=queue, **job_fields)
    enqueue(store, job)
    _count_job(store, queue)
    return job


def waiting(store: JobStore, queue: str) -> list[dict]:
    """QueueJob items, in the order workers take them: highest priority, then lowest position."""
    items = store.table.query(queue_key(queue), "JOB#")
    return sorted(items, key=lambda i: (-PRIORITY_RANK.get(i.get("priority"), 1), i.get("position", 0)))


def claim_next(store: JobStore, queue: str, worker: str, instance_id: str, lease: int = DEFAULT_LEASE_SECONDS):
    """Claim the first waiting job: pending -> running only if it is still pending and no one claimed
    it since we read it (attempts unchanged). Returns the claimed Job, or None when nothing waits."""
    for entry in waiting(store, queue):
        job = store.get_job(entry["SK"].removeprefix("JOB#"))
        if job is None or job.status != "pending":
            if job is None or job.status in FINISHED:
                store.table.delete(entry["PK"], entry["SK"])  # a leftover; the job will not run again
            continue
        try:
            claim(store, job, worker, instance_id, lease, expect_status="pending")
        except ConditionFailed:
            continue  # another worker was faster
        dequeue(store, job)
        return job
    return None


def claim(store: JobStore, job: Job, worker: str, instance_id: str, lease: int, expect_status: str) -> Job:
    """Take `job` for this worker (attempt + 1); ConditionFailed if its status or attempt changed."""
    attempts = job.attempts
    store.transition(
        job,
        "running",
        expect={"status": expect_status, "attempts": attempts or None},
        message=f"attempt {attempts + 1}: claimed by {worker}",
        instance_id=instance_id,
        attempts=attempts + 1,
        worker=worker,
        host=None,  # the training process records its own host and pid when it starts
        pid=None,
        heartbeat_at=now_iso(),
        lease_seconds=lease,
    )
    put_instance_job(store, instance_id, job.job_id, "running")
    return job


def put_instance_job(store: JobStore, instance_id: str, job_id: str, status: str) -> None:
    """InstanceJob: which instance ran which job. status: assigned|running|completed|failed|cancelled."""
    key = {"PK": f"INSTANCE#{instance_id}", "SK": f"JOB#{job_id}"}
    previous = store.table.get(key["PK"], key["SK"]) or {}
    store.table.put(
        {
            **key,
            "TYPE": "INSTANCE_JOB",
            "GSI1PK": "JOB",
            "GSI1SK": f"JOB#{job_id}#INSTANCE#{instance_id}",
            "assigned_at": previous.get("assigned_at") or now_iso(),
            "status": status,
        }
    )


def instance_job_status(job_status: str) -> str:
    return {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}.get(job_status, "failed")


def release(
    store: JobStore, job: Job, reason: str, counts_as_failure: bool, max_attempts: int, instance_id: str
) -> Job:
    """A job whose run ended without finishing (stale, crashed, interrupted) goes back to `pending`
    and into the queue; `cancelled` when a cancel was requested; `failed` when it already used its
    attempts and this loss counts as a failure (interruptions do not: they are the machine's fault).
    Raises ConditionFailed when another worker changed it first."""
    expect = {"status": job.status, "attempts": job.attempts or None, "heartbeat_at": job.heartbeat_at}
    if job.cancel_requested:
        store.transition(job, "cancelled", expect, message=f"cancelled ({reason})", instance_id=instance_id)
    elif counts_as_failure and job.attempts >= max_attempts:
        message = f"{reason}; gave up after {job.attempts} attempt(s) (--max-attempts {max_attempts})"
        store.transition(job, "failed", expect, message=message[:500], instance_id=instance_id)
        store.add_log(job.job_id, "ERROR", message, source="worker")
    else:
        store.transition(
            job,
            "pending",
            expect,
            message=f"requeued after attempt {job.attempts}: {reason}"[:500],
            instance_id=instance_id,
            worker=None,
            host=None,
            pid=None,
            heartbeat_at=None,
        )
        enqueue(store, job)
    return job


def recover(
    store: JobStore,
    queue: str,
    instance_id: str,
    lease: int = DEFAULT_LEASE_SECONDS,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[Job]:
    """Put this queue's stale running jobs and its interrupted jobs back in the queue (or end them)."""
    released = []
    for job in store.list_jobs("running") + store.list_jobs("interrupted"):
        if job.queue != queue:
            continue
        if job.status == "running" and not job.is_stale(lease):
            continue
        reason = "interrupted" if job.status == "interrupted" else f"stale: no heartbeat from {job.worker}"
        with contextlib.suppress(ConditionFailed):  # another worker handled it, or it came back to life
            released.append(release(store, job, reason, job.status == "running", max_attempts, instance_id))
    return released


def cancel(store: JobStore, job: Job) -> str:
    """pending/interrupted -> cancelled at once; running -> a cancel request the trainer sees at its
    next log. Returns what happened, in words."""
    from ..errors import UserError

    for _ in range(10):  # a status may change under us; read again and decide again
        try:
            if job.status in ("pending", "interrupted"):
                store.transition(
                    job,
                    "cancelled",
                    expect={"status": job.status, "attempts": job.attempts or None},
                    message="cancelled by user",
                )
                if job.queue:
                    dequeue(store, job)
                return "cancelled"
            if job.status == "running":
                if job.is_stale():
                    # Nobody will see a request: end it here (the worker's recovery would do the same).
                    store.transition(
                        job,
                        "cancelled",
                        expect={"status": "running", "attempts": job.attempts or None},
                        message="cancelled by user (its process was gone)",
                    )
                    return "cancelled"
                job.cancel_requested = True
                store.table.put(job.to_item(), expect={"status": "running", "attempts": job.attempts or None})
                store.add_log(job.job_id, "WARNING", "cancel requested by user", source="cancel")
                return "cancel requested"
            raise UserError(f"Job {job.name} ({job.job_id}) already {job.status}; there is nothing to cancel.")
        except ConditionFailed:
            job = store.get_job(job.job_id)
    raise UserError(f"Job {job.job_id} kept changing status; run `layoutlm-cli jobs cancel` again.")
