"""The Optuna study of a sweep, kept beside its jobs, and the loop that runs its trials.

Every trial is a Job named `<sweep>-t<k>` whose job_config carries the `sweep` tag (name, trial
number, parameters, the space and the command line's settings); the job store is the record of
the sweep. The study itself lives:
- embedded store (sqlite:///DIR/jobs.db): in Optuna's RDB storage sqlite:///DIR/optuna.db;
- DynamoDB store: nowhere else: it is rebuilt in memory from the trial jobs' tags, results and
  val_f1 metrics (`study.add_trial(create_trial(...))`), then asked and told as usual.
The data is read once, into a snapshot every trial trains on (snapshot.py).
Trials run here one after another, or go on the queue for workers (`--submit`, or a local worker
with --parallel) while this process polls the store and tells Optuna each result. Pruning is
decided inside each trial's own process from what the store records (pruning.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fleet.queue import DEFAULT_QUEUE
from ..store import Job, JobStore, open_store
from ..training.config import TrainConfig, check_config
from .pruning import PruneTrial
from .snapshot import check_snapshot, take_snapshot
from .space import SearchSpace, parse_space

PRUNERS = ("none", "median", "hyperband")
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the results (Optuna's default is 10)


@dataclass
class SweepSettings:
    name: str
    trials: int = 10  # of the whole sweep, the recorded ones included
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 42
    submit: bool = False
    queue: str = DEFAULT_QUEUE
    parallel: int = 1  # trials running at once here (a local worker), or with submit queued at once
    poll: float = 10.0


def trial_name(sweep: str, number: int) -> str:
    return f"{sweep}-t{number}"


def tag_of(job: Job) -> dict | None:
    tag = (job.job_config or {}).get("sweep")
    return tag if isinstance(tag, dict) else None


def trial_jobs(store: JobStore, name: str) -> list[Job]:
    """The sweep's trial jobs, by trial number."""
    found = [j for j in store.list_jobs() if (tag_of(j) or {}).get("name") == name]
    return sorted(found, key=lambda j: tag_of(j)["trial"])


def make_sampler(kind: str, seed: int):
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
    return optuna.samplers.RandomSampler(seed=seed)  # grid points are enqueued; random draws nothing then


def make_pruner(kind: str):
    import optuna

    if kind == "median":
        # Not before 3 trials have finished, nor at the first evaluation (warm-up makes it noisy).
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def val_f1_by_epoch(store: JobStore, job: Job) -> dict[int, float]:
    return {int(m["epoch"]): float(m["value"]) for m in store.metrics(job.job_id, "val_f1") if m.get("epoch")}


def frozen_trial(store: JobStore, job: Job, distributions: dict):
    """A finished trial job as an Optuna FrozenTrial: succeeded -> COMPLETE with its best val F1,
    cancelled (pruned, or cancelled by hand) -> PRUNED, failed/interrupted/stale -> FAIL."""
    import optuna
    from optuna.trial import TrialState

    params = tag_of(job)["params"]
    if job.status == "succeeded" and isinstance(job.results.get("best_f1"), (int, float)):
        state, value = TrialState.COMPLETE, float(job.results["best_f1"])
    elif job.status == "cancelled":
        state, value = TrialState.PRUNED, None
    else:
        state, value = TrialState.FAIL, None
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=params,
        distributions={k: distributions[k] for k in params},
        intermediate_values=val_f1_by_epoch(store, job) if state != TrialState.FAIL else {},
        user_attrs={"job_id": job.job_id},
    )


def in_flight(job: Job) -> bool:
    """A trial job a worker (or a process) is still expected to finish."""
    return job.status in ("pending", "running") and not job.is_stale()


def rebuilt_study(store: JobStore, jobs: list[Job], space: SearchSpace, sampler=None, pruner=None):
    """An in-memory study holding the finished trial jobs."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    distributions = space.distributions()
    for job in jobs:
        if not in_flight(job):
            study.add_trial(frozen_trial(store, job, distributions))
    return study


def recorded_sweep(jobs: list[Job]) -> tuple[SearchSpace, dict, dict]:
    """(space, command-line settings, sweep settings) recorded with the first trial."""
    tag = tag_of(jobs[0])
    return parse_space(tag["space"], f"recorded with sweep {tag['name']}"), tag["base"], tag.get("settings", {})


def _rdb_path(store_uri: str) -> Path | None:
    if store_uri.startswith("sqlite:///"):
        return Path(store_uri[len("sqlite:///") :]).expanduser().parent / "optuna.db"
    return None


def open_study(store_uri: str, store: JobStore, jobs: list[Job], space: SearchSpace, s: SweepSettings, pruner):
    """The sweep's study with every recorded trial finished or in flight; returns (study, {job_id: trial})
    for the trials still in flight (queued or running on a worker)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Seeded, and shifted by the trials already recorded: a continued sweep does not redraw them.
    sampler = make_sampler(s.sampler, s.seed + len(jobs))
    by_id = {j.job_id: j for j in jobs}
    waiting: dict[str, object] = {}
    db = _rdb_path(store_uri)
    if db is None:
        study = rebuilt_study(store, jobs, space, sampler, pruner)
        for job in jobs:
            if in_flight(job):
                study.enqueue_trial(tag_of(job)["params"])
                trial = study.ask(space.distributions())
                trial.set_user_attr("job_id", job.job_id)
                waiting[job.job_id] = trial
        return study, waiting
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    if not jobs and s.name in optuna.study.get_all_study_names(storage):
        optuna.delete_study(study_name=s.name, storage=storage)  # a study whose jobs are gone
    study = optuna.create_study(
        storage=storage, study_name=s.name, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True
    )
    if jobs and not study.get_trials(deepcopy=False):  # optuna.db was lost: the jobs still hold the trials
        distributions = space.distributions()
        for job in jobs:
            if not in_flight(job):
                study.add_trial(frozen_trial(store, job, distributions))
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        job = by_id.get(t.user_attrs.get("job_id"))
        if job is not None and in_flight(job):
            waiting[job.job_id] = optuna.trial.Trial(study, t._trial_id)
        else:  # its process died before the trial ended (or before its job was written)
            tell(study, t.number, job)
    return study, waiting


def tell(study, trial, job: Job | None, pruned: bool = False) -> str:
    """Tell Optuna how a trial's job ended; returns the state, in words."""
    from optuna.trial import TrialState

    if job is not None and job.status == "succeeded" and isinstance(job.results.get("best_f1"), (int, float)):
        study.tell(trial, float(job.results["best_f1"]))
        return "complete"
    if pruned or (job is not None and job.status == "cancelled"):
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned"
    study.tell(trial, state=TrialState.FAIL)
    return "failed"


def run_sweep(
    store_uri: str,
    s: SweepSettings,
    space: SearchSpace | None,
    base: dict | None,
    resume: bool = False,
    aws=None,
    say=print,
    pruner=None,
):
    """Run (or, with resume, continue) sweep `s.name` until it holds s.trials trials; returns the study.

    base: the command line's train settings (TrainConfig field -> value as given, job_name left out);
    pruner: an Optuna pruner in place of s.pruner (tests)."""
    from ..training.run import config_record

    store = open_store(store_uri, aws)
    jobs = trial_jobs(store, s.name)
    if jobs and not resume:
        raise UserError(
            f"Sweep {s.name!r} already has {len(jobs)} trial(s) in {store.description}; pass --continue to "
            "add to it, or another --name."
        )
    if resume:
        if not jobs:
            raise UserError(f"No sweep {s.name!r} in {store.description} to continue; start it without --continue.")
        space, base, recorded = recorded_sweep(jobs)
        s.sampler, s.pruner, s.seed = (
            recorded.get("sampler", s.sampler),
            recorded.get("pruner", s.pruner),
            recorded.get("seed", s.seed),
        )
    space.check(base)
    grid = space.grid() if s.sampler == "grid" else None
    if s.sampler == "grid" and grid is None:
        raise UserError("--sampler grid needs every searched parameter to be a list of choices, not a range.")
    pruner_name = s.pruner if pruner is None else type(pruner).__name__
    study, waiting = open_study(store_uri, store, jobs, space, s, pruner or make_pruner(s.pruner))
    numbers = [tag_of(j)["trial"] for j in jobs]
    next_number = max(numbers, default=-1) + 1
    remaining = None
    if grid is not None:
        seen = {json.dumps(tag_of(j)["params"], sort_keys=True) for j in jobs}
        remaining = [p for p in grid if json.dumps(p, sort_keys=True) not in seen]
    recorded = {"sampler": s.sampler, "pruner": s.pruner, "seed": s.seed}
    out_root = base.get("output_dir")
    to_run = max(0, s.trials - len(jobs))
    if remaining is not None:
        to_run = min(to_run, len(remaining))
    say(f"sweep {s.name}: {len(jobs)} trial(s) recorded, {to_run} to run ({s.sampler} sampler, seed {s.seed})")
    if to_run:
        recorded_data = tag_of(jobs[0]).get("data") if jobs else None
        if recorded_data:
            data = check_snapshot(recorded_data, base, s.name, aws, say)
        else:
            data = take_snapshot(base, s.name, aws, say)
    # --parallel without --submit: the trials go on a queue of their own, run by a worker started here
    # (also when continuing a sweep whose trials are still on that queue).
    here = not s.submit and (s.parallel > 1 or bool(waiting))
    queued = s.submit or here
    queue = s.queue if s.submit else f"sweep-{s.name}"
    with local_worker(store_uri, queue, s.parallel, aws, say) if here else contextlib.nullcontext() as worker:
        for _ in range(to_run):
            if remaining is not None:
                study.enqueue_trial(remaining.pop(0))
            trial = study.ask(space.distributions())
            name = trial_name(s.name, next_number)
            settings = {**base, **space.settings(trial.params), "job_name": name, "dataset": data["dataset"]}
            settings["output_dir"] = str(Path(out_root).expanduser() / name) if out_root else None
            try:
                cfg = TrainConfig(**settings)
                check_config(cfg)
            except UserError:
                tell(study, trial, None)
                raise
            tag = {
                "name": s.name,
                "trial": next_number,
                "params": trial.params,
                "space": space.as_dict(),
                "base": base,
                "settings": recorded,
                "data": data,
            }
            record = {**config_record(cfg, resume=False), "sweep": tag}
            job_fields = {"description": cfg.description, "priority": cfg.priority, "tags": {"sweep": s.name}}
            if cfg.output_s3_uri:
                from ..s3 import S3Sync

                job_fields["storage"] = S3Sync(cfg.output_s3_uri, name, aws).storage
            next_number += 1
            params = ", ".join(f"{k}={v}" for k, v in trial.params.items())
            if queued:
                from ..fleet.queue import submit

                job = submit(store, name, record, queue, **job_fields)
                trial.set_user_attr("job_id", job.job_id)
                waiting[job.job_id] = trial
                say(f"trial {tag['trial']} ({name}) queued on {queue}: {params}")
                while len(waiting) >= s.parallel:
                    collect(store, study, waiting, s.poll, say, worker)
                continue
            job = store.create_job(name, record, **job_fields)
            trial.set_user_attr("job_id", job.job_id)
            say(f"trial {tag['trial']} ({name}): {params}")
            run_here(cfg, job, trial, study, store, store_uri, aws, say, pruner or make_pruner(s.pruner), pruner_name)
        while waiting:
            collect(store, study, waiting, s.poll, say, worker)
    return study


def collect(store: JobStore, study, waiting: dict, poll: float, say, worker=None) -> None:
    """Wait one poll, then tell Optuna about the queued trials that ended. worker: the sweep's own local
    worker process, if it has one (its end, with trials left, ends the sweep)."""
    time.sleep(poll)
    if worker is not None and worker.poll() is not None:
        raise UserError(
            f"The sweep's worker (pid {worker.pid}) exited with code {worker.returncode} before its trials "
            "ended; see its output above, then `sweep --continue` to go on."
        )
    for job_id, trial in list(waiting.items()):
        job = store.get_job(job_id)
        if job is None or not in_flight(job):
            state = tell(study, trial, job)
            del waiting[job_id]
            f1 = job.results.get("best_f1") if job else None
            say(f"trial {job.name if job else job_id}: {state}" + (f", best val F1 {f1:.4f}" if f1 is not None else ""))


@contextlib.contextmanager
def local_worker(store_uri: str, queue: str, parallel: int, aws, say):
    """`layoutlm-cli worker` on this machine for the sweep's own queue: one trial per GPU when there are
    `parallel` GPUs, else `parallel` trials on the CPU sharing its cores. Stopped (SIGTERM) at the end."""
    import signal
    import subprocess
    import sys

    from ..fleet.worker import die_with_parent, gpu_count

    gpus = gpu_count()
    if 0 < gpus < parallel:
        raise UserError(
            f"--parallel {parallel} runs one trial per GPU and this machine has {gpus}; pass --parallel {gpus}, "
            "or --submit for workers on other machines."
        )
    slots = ["--gpus", ",".join(str(k) for k in range(parallel))] if gpus else ["--cpu-slots", str(parallel)]
    where = ["--region", aws.region] if aws and aws.region else []
    where += ["--endpoint-url", aws.dynamodb_endpoint] if aws and aws.dynamodb_endpoint else []
    command = [sys.executable, "-m", "receipt_layoutlm.cli", "worker", "--job-store", store_uri, "--queue", queue]
    # It gets SIGTERM if this process dies (its trials save and go back on the queue for --continue),
    # and exits by itself after two idle minutes should that signal never come.
    proc = subprocess.Popen([*command, *slots, *where, "--poll", "1", "--idle-exit", "120"], preexec_fn=die_with_parent)
    say(f"worker pid {proc.pid} runs the trials of queue {queue} ({' '.join(slots[1:]).replace(',', ', ')} slots)")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # a running trial saves a checkpoint and is put back on the queue
            proc.wait()


def run_here(cfg: TrainConfig, job: Job, trial, study, store: JobStore, store_uri: str, aws, say, pruner, pruner_name):
    """One trial through run_training, reporting to Optuna after every evaluation."""
    from ..training.run import run_training

    callback = PruneTrial(store, job, pruner, pruner_name, trial, say)
    try:
        summary = run_training(cfg, store_uri=store_uri, aws=aws, job=job, say=say, callbacks=[callback])
    except UserError:
        if callback.pruned:
            tell(study, trial, store.get_job(job.job_id), pruned=True)
            say(f"trial {job.name}: pruned, job {job.job_id} cancelled")
            return
        stored = store.get_job(job.job_id)
        if stored is not None and stored.status == "pending":  # refused before it recorded anything
            store.update_job(stored, status="failed", message="refused before training; see the sweep's output")
        tell(study, trial, None)
        raise
    except BaseException:
        tell(study, trial, None)
        raise
    tell(study, trial, store.get_job(job.job_id))
    say(f"trial {job.name}: best val F1 {summary['best_f1']:.4f} at epoch {summary['best_epoch']}")
