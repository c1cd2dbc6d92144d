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
from .table import ConditionFailed, ItemExists, Table

if TYPE_CHECKING:
    from ..aws import AwsSettings

__all__ = ["ConditionFailed", "ItemExists", "JobStore", "Job", "Table", "open_store", "resolve_store_uri"]

STATUSES = ("pending", "running", "succeeded", "failed", "cancelled", "interrupted")
PRIORITIES = ("low", "medium", "high", "critical")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

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
        return item


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
    ) -> Job:
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
        )
        self.table.put(job.to_item(), must_not_exist=True)
        self._status_row(job, message="created")
        return job

    def update_job(
        self, job: Job, status: str | None = None, message: str | None = None, progress: float | None = None
    ) -> Job:
        """Rewrite the Job item (GSI1 follows the status) and, on a status change, add a JobStatus row."""
        changed = status is not None and status != job.status
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
            job.status = status
        self.table.put(job.to_item())
        if changed:
            self._status_row(job, message=message, progress=progress)
        return job

    def _status_row(self, job: Job, message: str | None = None, progress: float | None = None) -> None:
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
            "instance_id": socket.gethostname(),
        }
        if message:
            item["message"] = message
        if progress is not None:
            item["progress"] = max(0, min(100, round(progress)))
        self.table.put(item, must_not_exist=True)

    def add_metrics(self, job_id: str, metrics: list[dict]) -> None:
        """metrics: dicts with name, value, and optional step, epoch, unit. Written in one batch."""
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
        if items:
            self.table.put_many(items)

    def add_log(
        self, job_id: str, level: str, message: str | dict, source: str | None = None, exception: str | None = None
    ) -> None:
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
        self.table.put(item, must_not_exist=True)

    def add_checkpoint(
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
    ) -> None:
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
        self.table.put(item, must_not_exist=True)

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
