"""The job store: jobs, status history, metrics, logs and checkpoints as single-table items.

One class, `JobStore`, builds the items of docs/job-store.md and reads them back; it runs
over a table backend chosen by URI (`sqlite:///path`, the embedded default, or
`dynamodb://Table`; `resolve_store_uri` is the one rule that picks it). Backends only
put, get and query items (the `Table` contract in table.py), so both hold the same items
and every command works against either.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .table import ConditionFailed, ItemExists, StoreUnavailable, Table

if TYPE_CHECKING:
    from ..aws import AwsSettings

__all__ = [
    "ConditionFailed",
    "ItemExists",
    "JobStore",
    "StoreUnavailable",
    "Job",
    "Table",
    "open_store",
    "resolve_store_uri",
]

STATUSES = ("pending", "running", "succeeded", "failed", "cancelled", "interrupted")
PRIORITIES = ("low", "medium", "high", "critical")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
RUN_ATTRIBUTES = ("queue", "attempts", "worker", "host", "pid", "heartbeat_at", "lease_seconds", "cancel_requested")
DEFAULT_LEASE_SECONDS = 600

_clock_lock = threading.Lock()
_last_time = datetime.min.replace(tzinfo=UTC)


def now_iso() -> str:
    """UTC ISO-8601 with microseconds, strictly increasing within this process.

    Keys embed timestamps, and two metrics of one name need distinct ones.
    """
    global _last_time
    with _clock_lock:
        t = datetime.now(UTC)
        if t <= _last_time:
            t = _last_time + timedelta(microseconds=1)
        _last_time = t
    return t.isoformat(timespec="microseconds")


def default_store_uri() -> str:
    """The embedded store: jobs.db in the user data directory."""
    from platformdirs import user_data_dir

    return f"sqlite:///{Path(user_data_dir('receipt-layoutlm')) / 'jobs.db'}"


def resolve_store_uri(flag: str | None = None, dynamo_table: str | None = None) -> str:
    """The one rule that picks the job store of every command: --job-store, then env
    LAYOUTLM_JOB_STORE, then dynamodb://<--dynamo-table> (jobs live in the receipts table),
    then the embedded sqlite file."""
    if flag:
        return flag
    if os.environ.get("LAYOUTLM_JOB_STORE"):
        return os.environ["LAYOUTLM_JOB_STORE"]
    if dynamo_table:
        return f"dynamodb://{dynamo_table}"
    return default_store_uri()


def open_store(uri: str | None = None, aws: AwsSettings | None = None) -> JobStore:
    """The JobStore at uri (sqlite:///PATH or dynamodb://TABLE; None: resolve_store_uri()).
    aws: region and endpoint of a DynamoDB store."""
    uri = uri or resolve_store_uri()
    if uri.startswith("sqlite:///"):
        from .sqlite import SqliteTable

        return JobStore(SqliteTable(Path(uri[len("sqlite:///") :]).expanduser()))
    if uri.startswith("dynamodb://"):
        from .dynamodb import DynamoTable

        table = uri[len("dynamodb://") :].strip("/")
        if not table:
            raise UserError("--job-store dynamodb:// needs a table name, e.g. dynamodb://ReceiptsTable.")
        return JobStore(DynamoTable(table, aws))
    raise UserError(f"Unknown job store {uri!r}; use sqlite:///PATH or dynamodb://TABLE.")


class LeaseLost(Exception):
    """The job was declared stale and claimed by another worker while this process still ran it."""


@dataclass
class Job:
    job_id: str
    name: str
    status: str
    created_at: str
    created_by: str = ""
    description: str = ""
    priority: str = "medium"
    job_config: dict = field(default_factory=dict)
    storage: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    # Who runs it and whether it is alive (issue 11). Left out of the item while unset.
    queue: str | None = None  # the queue it was submitted to; None for a `train` run here
    attempts: int = 0  # times a worker (or `resume`) claimed it
    worker: str | None = None  # "<instance id>/<worker pid>" of the worker running it
    host: str | None = None  # host name of the process running it
    pid: int | None = None  # that process's id, to tell at once on that host whether it still runs
    heartbeat_at: str | None = None  # last sign of life; older than lease_seconds = stale
    lease_seconds: int | None = None
    cancel_requested: bool = False

    @classmethod
    def from_item(cls, item: dict) -> Job:
        return cls(
            job_id=item["PK"].removeprefix("JOB#"),
            name=item["name"],
            status=item["status"],
            created_at=item["created_at"],
            created_by=item.get("created_by", ""),
            description=item.get("description", ""),
            priority=item.get("priority", "medium"),
            job_config=item.get("job_config") or {},
            storage=item.get("storage") or {},
            results=item.get("results") or {},
            tags=item.get("tags") or {},
            **{name: item[name] for name in RUN_ATTRIBUTES if item.get(name) is not None},
        )

    def to_item(self) -> dict:
        item = {
            "PK": f"JOB#{self.job_id}",
            "SK": "JOB",
            "TYPE": "JOB",
            "GSI1PK": f"STATUS#{self.status}",
            "GSI1SK": f"CREATED#{self.created_at}",
            "GSI2PK": f"JOB_NAME#{self.name}",
            "GSI2SK": f"CREATED#{self.created_at}",
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "status": self.status,
            "priority": self.priority,
            "job_config": self.job_config,
        }
        # Empty optional maps are left out (spec).
        for key in ("storage", "results", "tags"):
            if getattr(self, key):
                item[key] = getattr(self, key)
        for key in RUN_ATTRIBUTES:
            if getattr(self, key):
                item[key] = getattr(self, key)
        return item

    def is_stale(self, default_lease: float = DEFAULT_LEASE_SECONDS, here: str | None = None) -> bool:
        """A pending/running job whose process is gone: on its own host, its pid no longer runs
        (known at once); anywhere, its heartbeat is older than its lease (also on its own host, where
        the pid may since belong to another process)."""
        if self.status not in ("pending", "running") or (self.status == "pending" and self.queue):
            return False  # a queued pending job waits for a worker; nobody runs it yet
        if self.host and self.pid and self.host == (here or socket.gethostname()) and not pid_alive(self.pid):
            return True
        if self.heartbeat_at:
            lease = self.lease_seconds or default_lease
            age = datetime.now(UTC) - datetime.fromisoformat(self.heartbeat_at)
            return age.total_seconds() > lease
        return False

    def as_dict(self, default_lease: float = DEFAULT_LEASE_SECONDS) -> dict:
        return {**self.__dict__, "stale": self.is_stale(default_lease)}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, under another user
    # A zombie (dead, not yet reaped by its parent) still answers signal 0.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _epoch_step(value, name: str) -> int:
    value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return value


class JobStore:
    def __init__(self, table: Table):
        self.table = table

    @property
    def description(self) -> str:
        return self.table.description

    # --- writing -------------------------------------------------------------------
    def create_job(
        self,
        name: str,
        job_config: dict,
        description: str = "",
        priority: str = "medium",
        tags: dict | None = None,
        storage: dict | None = None,
        queue: str | None = None,
    ) -> Job:
        """A new `pending` Job. Without a queue it is run by this process (host and pid recorded, so a
        dead run reads STALE at once); with one it waits for a worker."""
        if priority not in PRIORITIES:
            raise UserError(f"Unknown priority {priority!r}; use one of {', '.join(PRIORITIES)}.")
        job = Job(
            job_id=str(uuid.uuid4()),
            name=name,
            status="pending",
            created_at=now_iso(),
            created_by=f"{getpass.getuser()}@{socket.gethostname()}",
            description=description,
            priority=priority,
            job_config=job_config,
            storage=storage or {},
            tags=tags or {},
            queue=queue,
        )
        if queue is None:
            job.host, job.pid = socket.gethostname(), os.getpid()
        self.table.put(job.to_item(), must_not_exist=True)
        self._status_row(job, message="created")
        return job

    def _put_job(self, job: Job) -> None:
        """Rewrite the Job item without losing a cancel request another process wrote meanwhile."""
        # The stored attempt number fences the write: once another worker has claimed the job again,
        # this process must not write over it.
        expect = {"attempts": job.attempts or None}
        if not job.cancel_requested:
            expect["cancel_requested"] = None
        try:
            self.table.put(job.to_item(), expect=expect)
        except ConditionFailed:
            stored = self.get_job(job.job_id)
            if stored is None or stored.attempts != job.attempts:
                raise LeaseLost(
                    f"job {job.job_id} was claimed again by {stored.worker if stored else 'nobody'} "
                    f"(attempt {stored.attempts if stored else '?'}); this process stops writing to it"
                ) from None
            job.cancel_requested = True
            self.table.put(job.to_item(), expect={"attempts": job.attempts or None})

    def transition(
        self, job: Job, status: str, expect: dict, message: str | None = None, instance_id: str | None = None, **attrs
    ) -> Job:
        """Change a job's status only if the stored Job still holds `expect` (e.g. {"status": "pending"});
        raises ConditionFailed otherwise. Two processes racing for one job: exactly one wins."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        changed = Job.from_item({**job.to_item(), "status": status})
        for name, value in attrs.items():
            setattr(changed, name, value)
        self.table.put(changed.to_item(), expect=expect)
        self._status_row(changed, message=message, instance_id=instance_id)
        job.__dict__.update(changed.__dict__)
        return job

    def heartbeat(self, job: Job) -> bool:
        """Record that the job's process is alive; returns True when a cancel was requested."""
        job.heartbeat_at = now_iso()
        job.host, job.pid = socket.gethostname(), os.getpid()
        self._put_job(job)
        return job.cancel_requested

    def update_job(
        self, job: Job, status: str | None = None, message: str | None = None, progress: float | None = None
    ) -> Job:
        """Rewrite the Job item (GSI1 follows the status) and, on a status change, add a JobStatus row."""
        changed = status is not None and status != job.status
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
            job.status = status
        self._put_job(job)
        if changed:
            self._status_row(job, message=message, progress=progress)
        return job

    def _status_row(
        self, job: Job, message: str | None = None, progress: float | None = None, instance_id: str | None = None
    ) -> None:
        self.table.put(self.status_item(job, message, progress, instance_id), must_not_exist=True)

    # Item builders: the one place each item's format is made. A journaled write (store/journal.py)
    # keeps the item it built, so its replay overwrites the same key instead of adding a second row.
    def status_item(
        self, job: Job, message: str | None = None, progress: float | None = None, instance_id: str | None = None
    ) -> dict:
        """The JobStatus row recording the job's current status."""
        at = now_iso()
        item = {
            "PK": f"JOB#{job.job_id}",
            "SK": f"STATUS#{at}",
            "TYPE": "JOB_STATUS",
            "GSI1PK": f"STATUS#{job.status}",
            "GSI1SK": f"UPDATED#{at}",
            "status": job.status,
            "updated_at": at,
            "updated_by": job.created_by,
            "instance_id": instance_id or socket.gethostname(),
        }
        if message:
            item["message"] = message
        if progress is not None:
            item["progress"] = max(0, min(100, round(progress)))
        return item

    def add_metrics(self, job_id: str, metrics: list[dict]) -> None:
        """metrics: dicts with name, value, and optional step, epoch, unit. Written in one batch."""
        items = self.metric_items(job_id, metrics)
        if items:
            self.table.put_many(items)

    def metric_items(self, job_id: str, metrics: list[dict]) -> list[dict]:
        """JobMetric items of metrics (dicts with name, value, and optional step, epoch, unit)."""
        items = []
        for m in metrics:
            at = now_iso()
            name = m["name"]
            item = {
                "PK": f"JOB#{job_id}",
                "SK": f"METRIC#{name}#{at}",
                "TYPE": "JOB_METRIC",
                "GSI1PK": f"METRIC#{name}",
                "GSI1SK": at,
                "GSI2PK": f"METRIC#{name}",
                "GSI2SK": f"JOB#{job_id}#{at}",
                "job_id": job_id,
                "metric_name": name,
                "timestamp": at,
                "value": m["value"],
            }
            for key in ("step", "epoch"):
                if m.get(key) is not None:
                    item[key] = _epoch_step(m[key], key)
            if m.get("unit"):
                item["unit"] = m["unit"]
            items.append(item)
        return items

    def add_log(
        self, job_id: str, level: str, message: str | dict, source: str | None = None, exception: str | None = None
    ) -> None:
        self.table.put(self.log_item(job_id, level, message, source, exception), must_not_exist=True)

    def log_item(
        self, job_id: str, level: str, message: str | dict, source: str | None = None, exception: str | None = None
    ) -> dict:
        """The JobLog item of one message (a dict is stored as JSON)."""
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown log level {level!r}")
        if isinstance(message, dict):
            message = json.dumps(message, default=str)
        at = now_iso()
        item = {
            "PK": f"JOB#{job_id}",
            "SK": f"LOG#{at}",
            "TYPE": "JOB_LOG",
            "GSI1PK": "LOG",
            "GSI1SK": f"JOB#{job_id}#{at}",
            "log_level": level,
            "message": message or "(empty)",
        }
        if source:
            item["source"] = source
        if exception:
            item["exception"] = exception
        return item

    def add_checkpoint(self, *args, **kwargs) -> None:
        self.table.put(self.checkpoint_item(*args, **kwargs), must_not_exist=True)

    def checkpoint_item(
        self,
        job_id: str,
        s3_bucket: str,
        s3_key: str,
        size_bytes: int,
        step: int,
        epoch: int,
        is_best: bool = False,
        metrics: dict | None = None,
        optimizer_state: bool = True,
    ) -> dict:
        """The JobCheckpoint row of a checkpoint uploaded to S3."""
        at = now_iso()
        item = {
            "PK": f"JOB#{job_id}",
            "SK": f"CHECKPOINT#{at}",
            "TYPE": "JOB_CHECKPOINT",
            "GSI1PK": "CHECKPOINT",
            "GSI1SK": f"JOB#{job_id}#{at}",
            "job_id": job_id,
            "timestamp": at,
            "s3_bucket": s3_bucket,
            "s3_key": s3_key,
            "size_bytes": int(size_bytes),
            "step": _epoch_step(step, "step"),
            "epoch": _epoch_step(epoch, "epoch"),
            "model_state": True,
            "optimizer_state": optimizer_state,
            "is_best": is_best,
        }
        if metrics:
            item["metrics"] = metrics
        return item

    def mark_checkpoint(self, row: dict, **attributes) -> None:
        """Add attributes to a JobCheckpoint row (e.g. `s3_deleted`, `deleted_at`), keeping the others."""
        self.table.put({**row, **attributes}, expect={"TYPE": "JOB_CHECKPOINT"})

    # --- reading -------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        item = self.table.get(f"JOB#{job_id}", "JOB")
        return Job.from_item(item) if item else None

    def jobs_by_name(self, name: str) -> list[Job]:
        """Newest first (GSI2)."""
        return [Job.from_item(i) for i in self.table.query(f"JOB_NAME#{name}", "CREATED#", index="GSI2", forward=False)]

    def list_jobs(self, status: str | None = None) -> list[Job]:
        """Oldest first. By status through GSI1 (JobStatus rows share it: filter TYPE=JOB)."""
        if status is not None:
            if status not in STATUSES:
                raise UserError(f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.")
            items = self.table.query(f"STATUS#{status}", "CREATED#", index="GSI1", type_filter="JOB")
            return [Job.from_item(i) for i in items]
        jobs = [Job.from_item(i) for i in self.table.query("JOB", index="GSITYPE")]
        return sorted(jobs, key=lambda j: j.created_at)

    def resolve(self, ref: str) -> Job:
        """A job by id, else the newest job of that name."""
        job = self.get_job(ref)
        if job is None:
            named = self.jobs_by_name(ref)
            job = named[0] if named else None
        if job is None:
            raise UserError(
                f"No job with id or name {ref!r} in {self.description}; `layoutlm-cli jobs list` shows the jobs."
            )
        return job

    def metrics(self, job_id: str, name: str | None = None) -> list[dict]:
        prefix = f"METRIC#{name}#" if name else "METRIC#"
        return list(self.table.query(f"JOB#{job_id}", prefix))

    def logs(self, job_id: str) -> list[dict]:
        return list(self.table.query(f"JOB#{job_id}", "LOG#"))

    def status_history(self, job_id: str) -> list[dict]:
        return list(self.table.query(f"JOB#{job_id}", "STATUS#"))

    def checkpoints(self, job_id: str) -> list[dict]:
        return list(self.table.query(f"JOB#{job_id}", "CHECKPOINT#"))

    def checkpoints_in_s3(self, job_id: str) -> list[dict]:
        """The rows of the job's checkpoint-* uploads still in S3 (not best/, not deleted after pruning)."""
        return [r for r in self.checkpoints(job_id) if not r.get("is_best") and not r.get("s3_deleted")]
