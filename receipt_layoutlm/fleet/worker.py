"""`layoutlm-cli worker`: claim queued jobs, run each in a child process, keep the Instance item alive,
put back what could not finish, stop cleanly on SIGTERM/SIGINT or a spot interruption notice.

One loop, one thread: every tick it reaps finished children, watches for a stop, heartbeats the
Instance, and every --poll seconds recovers stale jobs and claims work for its free slots (one per
--gpus entry, else --cpu-slots, default one). A job runs in its own process (`python -m receipt_layoutlm.fleet.worker
STORE JOB_ID`, through training/run.py::run_training like `train`), so a crash of training cannot
take the worker down and the worker can stop it with a signal. Children get SIGTERM from the kernel
if the worker dies (PR_SET_PDEATHSIG): they save a checkpoint and end `interrupted`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..aws import AwsSettings
from ..errors import UserError
from ..store import DEFAULT_LEASE_SECONDS, ConditionFailed, StoreUnavailable, open_store
from ..store.journal import Journal
from .imds import DEFAULT_ENDPOINT, Imds
from .queue import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_QUEUE,
    FINISHED,
    claim_next,
    instance_job_status,
    put_instance_job,
    recover,
    release,
)

TICK_S = 0.2


@dataclass
class WorkerSettings:
    store_uri: str
    queue: str = DEFAULT_QUEUE
    gpus: list[str] = field(default_factory=list)  # one job per GPU in parallel; empty: CPU slots
    cpu_slots: int = 1  # without gpus: jobs at once on the CPU, the cores shared out among them
    max_jobs: int | None = None
    idle_exit: float | None = None
    lease: int = DEFAULT_LEASE_SECONDS
    poll: float = 5.0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    imds_endpoint: str = DEFAULT_ENDPOINT
    spot_poll: float = 5.0  # seconds between looks for a spot interruption notice (2 minutes of warning)
    stop_timeout: float = 100.0  # a spot warning gives 120 s: time to save, then stop hard
    aws: AwsSettings = field(default_factory=AwsSettings)  # where the DynamoDB store and S3 are


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM us when the worker dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Worker:
    def __init__(self, settings: WorkerSettings, say=print):
        self.settings, self.say = settings, say
        self.store = open_store(settings.store_uri, settings.aws)
        self.imds = Imds(settings.imds_endpoint)
        self.info = self.imds.describe()
        self.worker_id = f"{self.info.instance_id}/{os.getpid()}"
        # A slot is a GPU id, or with no GPUs named "cpu<k>" (one job at a time with the default 1 slot).
        self.slots: list[str] = list(settings.gpus) or [f"cpu{k}" for k in range(settings.cpu_slots)]
        # Each CPU job gets its share of the cores, so that N jobs do not fight over every core.
        shared = not settings.gpus and settings.cpu_slots > 1
        self.threads = max(1, (os.cpu_count() or 1) // settings.cpu_slots) if shared else None
        self.children: dict = {}  # slot -> (Popen, job_id)
        self.unrecorded: set[str] = set()  # jobs whose process ended while the store was away
        self.stop_reason: str | None = None
        self.signals = 0
        self.launched_at = None
        self.jobs_started = 0
        self.gpu_count = len(settings.gpus) or gpu_count()

    # --- the Instance item --------------------------------------------------------------
    def put_instance(self, status: str) -> None:
        from ..store import now_iso

        now = now_iso()
        self.launched_at = self.launched_at or now
        info = self.info
        self.store.table.put(
            {
                "PK": f"INSTANCE#{info.instance_id}",
                "SK": "INSTANCE",
                "TYPE": "INSTANCE",
                "GSI1PK": f"STATUS#{status}",
                "GSI1SK": f"INSTANCE#{info.instance_id}",
                "instance_type": info.instance_type,
                "gpu_count": self.gpu_count,
                "status": status,
                "launched_at": self.launched_at,
                "ip_address": info.ip_address,
                "availability_zone": info.availability_zone,
                "is_spot": info.is_spot,
                "health_status": "healthy" if status == "running" else "unknown",
                "heartbeat_at": now,
                "worker": self.worker_id,
                "queue": self.settings.queue,
            }
        )

    # --- signals ------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self.signals += 1
        self.stop_reason = self.stop_reason or f"worker received {signal.Signals(signum).name}"
        if self.signals > 1:  # asked twice: the children stop at once, without another checkpoint
            self._signal_children(signal.SIGTERM)

    def _signal_children(self, signum) -> None:
        for proc, _ in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.put_instance("running")
        self.say(
            f"worker {self.worker_id} ({self.info.instance_type}{', spot' if self.info.is_spot else ''}) "
            f"on queue {s.queue} of {self.store.description}, {len(self.slots)} slot(s)"
        )
        idle_since = last_poll = last_spot = time.monotonic()
        last_poll -= s.poll  # claim at once
        try:
            while True:
                self.reap()
                now = time.monotonic()
                if self.info.on_ec2 and self.stop_reason is None and now - last_spot >= self.settings.spot_poll:
                    last_spot = now
                    notice = self.imds.spot_interruption()
                    if notice:
                        self.stop_reason = f"spot interruption notice {notice}"
                if self.stop_reason:
                    self.say(f"stopping: {self.stop_reason}")
                    self.stop_children()
                    break
                if now - last_poll >= s.poll:
                    last_poll = now
                    try:
                        self.put_instance("running")
                        for job in recover(self.store, s.queue, self.info.instance_id, s.lease, s.max_attempts):
                            self.say(f"job {job.job_id} ({job.name}): {job.status} (was stale or interrupted)")
                        self.claim_work()
                    except StoreUnavailable as e:  # the jobs it runs go on (they journal); try at the next poll
                        self.say(f"job store unavailable, nothing claimed this time: {e}")
                if self.children:
                    idle_since = now
                elif s.max_jobs is not None and self.jobs_started >= s.max_jobs:
                    self.say(f"ran {self.jobs_started} job(s) (--max-jobs); exiting")
                    break
                elif s.idle_exit is not None and now - idle_since >= s.idle_exit:
                    self.say(f"nothing to do for {s.idle_exit:g} s (--idle-exit); exiting")
                    break
                time.sleep(TICK_S)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            with contextlib.suppress(StoreUnavailable):
                self.put_instance("stopped")
        return self.jobs_started

    def claim_work(self) -> None:
        s = self.settings
        for slot in self.slots:
            if slot in self.children or (s.max_jobs is not None and self.jobs_started >= s.max_jobs):
                continue
            job = claim_next(self.store, s.queue, self.worker_id, self.info.instance_id, s.lease)
            if job is None:
                return
            self.start(slot, job)

    def start(self, slot: str, job) -> None:
        env = dict(os.environ)
        on_gpu = bool(self.settings.gpus)
        if on_gpu:
            env["CUDA_VISIBLE_DEVICES"] = slot  # the child sees only its GPU
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "receipt_layoutlm.fleet.worker",
                self.settings.store_uri,
                job.job_id,
                json.dumps(asdict(self.settings.aws)),  # settings travel as arguments, not environment
                *([str(self.threads)] if self.threads else []),
            ],
            env=env,
            start_new_session=True,  # a Ctrl-C reaches the worker only; it decides what the children get
            preexec_fn=die_with_parent,
        )
        self.children[slot] = (proc, job.job_id)
        self.jobs_started += 1
        where = f" on GPU {slot}" if on_gpu else ""
        where += f" in slot {slot}, {self.threads} thread(s)" if self.threads else ""
        self.say(f"job {job.job_id} ({job.name}): attempt {job.attempts}{where}, pid {proc.pid}")

    def reap(self) -> None:
        for slot, (proc, job_id) in list(self.children.items()):
            if proc.poll() is not None:
                try:
                    self.finished(job_id, proc.returncode)
                except StoreUnavailable as e:
                    # Kept as a child: its end is recorded at a later tick, once the store answers.
                    if job_id not in self.unrecorded:
                        self.unrecorded.add(job_id)
                        self.say(f"job {job_id}: its end is not recorded yet ({e})")
                    continue
                self.unrecorded.discard(job_id)
                del self.children[slot]

    def finished(self, job_id: str, code: int) -> None:
        """Record how the child's run ended; put back what did not finish."""
        s = self.settings
        job = self.store.get_job(job_id)
        if job is None:
            return
        out = job.job_config.get("output_dir")
        if out and Journal.of(out).pending:
            # The run ended while the store was away: its journal holds how it ended; write that first.
            try:
                flushed = Journal.of(out).flush(self.store)
                self.say(f"job {job_id}: {flushed.written} journaled write(s) flushed from {out}")
            except StoreUnavailable as e:
                self.say(f"job {job_id}: journal in {out} not flushed yet ({e})")
            job = self.store.get_job(job_id)
        try:
            if job.status in FINISHED:
                put_instance_job(self.store, self.info.instance_id, job_id, instance_job_status(job.status))
            elif job.status == "interrupted":
                put_instance_job(self.store, self.info.instance_id, job_id, "failed")
                release(self.store, job, "interrupted", False, s.max_attempts, self.info.instance_id)
            elif job.status == "running" and job.worker == self.worker_id:
                put_instance_job(self.store, self.info.instance_id, job_id, "failed")
                reason = f"its training process exited with code {code} without recording an end"
                # Killed by our own stop (e.g. before it could install its signal handler): an interruption.
                failure = self.stop_reason is None
                release(self.store, job, reason, failure, s.max_attempts, self.info.instance_id)
        except ConditionFailed:
            job = self.store.get_job(job_id)  # another worker moved it first
        self.say(f"job {job_id} ({job.name}): {job.status}")

    def stop_children(self) -> None:
        """SIGTERM: each child saves a checkpoint at its next step and ends `interrupted`; then requeue."""
        self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(TICK_S)
        if self.children:
            self._signal_children(signal.SIGKILL)
            for proc, _ in self.children.values():
                proc.wait()
            self.reap()


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def config_from_record(record: dict):
    """The TrainConfig a job was submitted with (job_config holds every field, plus environment notes)."""
    from ..training.config import TrainConfig

    return TrainConfig(**{f.name: record[f.name] for f in fields(TrainConfig) if f.name in record})


def fetch_from_s3(store, job, cfg, say=print, aws: AwsSettings | None = None) -> bool:
    """On a machine without the job's output dir: bring back its newest uploaded checkpoint and run.json
    from S3 (JobCheckpoint rows are written only after a whole checkpoint is uploaded), so run_training
    continues the job instead of starting over. Returns whether it fetched anything."""
    import shutil
    import tempfile

    out = cfg.resolved_output_dir()
    if not cfg.output_s3_uri or not job.storage or (out.exists() and any(out.iterdir())):
        return False
    # Rows of checkpoints deleted from S3 after --save-total-limit pruned them stay, marked s3_deleted.
    rows = store.checkpoints_in_s3(job.job_id)
    if not rows:
        return False
    newest = max(rows, key=lambda r: r["step"])
    from ..s3 import S3Sync

    s3 = S3Sync(cfg.output_s3_uri, cfg.job_name, aws)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.fetch-"))
    try:
        s3.download_dir(newest["s3_key"], tmp / f"checkpoint-{newest['step']}")
        # The best checkpoint too, when it is another one: the run ends by loading it into best/.
        state = json.loads((tmp / f"checkpoint-{newest['step']}" / "trainer_state.json").read_text())
        best_name = Path(state.get("best_model_checkpoint") or "").name
        for row in rows:
            if f"checkpoint-{row['step']}" == best_name != f"checkpoint-{newest['step']}":
                s3.download_dir(row["s3_key"], tmp / best_name)
                break
        s3.client.download_file(s3.bucket, job.storage["logs_prefix"] + "run.json", str(tmp / "run.json"))
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)  # all or nothing: a half-fetched dir is never taken for the job's own
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(
        f"fetched checkpoint-{newest['step']} and run.json of job {job.job_id} from s3://{s3.bucket}/{newest['s3_key']}"
    )
    store.add_log(job.job_id, "INFO", f"checkpoint-{newest['step']} fetched from S3 to {out}", source="worker")
    return True


def run_job(store_uri: str, job_id: str, aws: AwsSettings | None = None, say=print, threads: int | None = None) -> int:
    """Run one claimed (or resumed) job here, through the same run_training as `train`. Exit code.
    threads: torch's CPU threads (a worker running several CPU jobs at once gives each its share)."""
    from ..training.run import run_training

    if threads:
        import torch

        torch.set_num_threads(threads)

    store = open_store(store_uri, aws)
    job = store.get_job(job_id)
    if job is None:
        say(f"error: no job {job_id} in {store.description}")
        return 2
    attempts = job.attempts
    cfg = config_from_record(job.job_config)
    try:
        from ..sweep.pruning import trial_callbacks

        fetch_from_s3(store, job, cfg, say, aws)
        run_training(cfg, store_uri=store_uri, job=job, say=say, aws=aws, callbacks=trial_callbacks(store, job, say))
        return 0
    except UserError as e:
        say(f"error: {e}")
        if Journal.of(cfg.resolved_output_dir()).pending:
            return 2  # the run recorded its end in its journal; the worker flushes it
        # Refused before it recorded anything (e.g. the output dir holds another job): say so on the job.
        with contextlib.suppress(StoreUnavailable):  # the store is away: the run's journal tells the worker
            job = store.get_job(job_id)
            if job is not None and job.status == "running" and job.attempts == attempts:
                try:
                    store.transition(
                        job, "failed", {"status": "running", "attempts": attempts or None}, message=str(e)[:500]
                    )
                    store.add_log(job_id, "ERROR", str(e), source="worker")
                except ConditionFailed:
                    pass
        return 2


if __name__ == "__main__":
    # python -m receipt_layoutlm.fleet.worker STORE_URI JOB_ID [AWS_SETTINGS_JSON [THREADS]]: a worker's child.
    child_aws = AwsSettings(**json.loads(sys.argv[3])) if len(sys.argv) > 3 else None
    sys.exit(run_job(sys.argv[1], sys.argv[2], child_aws, threads=int(sys.argv[4]) if len(sys.argv) > 4 else None))
