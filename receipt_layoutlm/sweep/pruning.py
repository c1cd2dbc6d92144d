"""Pruning a sweep's trial from inside its own training process, wherever that runs.

A trial may run in the sweep's process, in a local worker (--parallel) or in a worker on another
machine (--submit). In all three the decision is made the same way: after every evaluation the trial
reads its sweep's trial jobs and their val_f1 metrics from the job store (the record every trial writes
anyway), rebuilds the study in memory with itself as the running trial, and asks the pruner recorded
with the sweep. A pruned trial stops as `cancelled` with the reason in its log.
"""

from __future__ import annotations

from ..store import Job, JobStore, StoreUnavailable


def should_prune(store: JobStore, job: Job, reported: dict[int, float], pruner) -> bool:
    """Whether `pruner` stops trial `job`, whose val F1 so far is `reported` (epoch -> F1), given the
    sweep's other trials as the store records them.

    The study is replayed, not just loaded: every trial is asked in trial order (Hyperband puts a trial
    in a bracket by a hash of the study name and trial number), then each one's reports are given again
    with the pruner consulted after each, as it was when the trial ran (successive halving remembers a
    trial's value at each rung it reached), the other trials first, this one last."""
    import optuna

    from .space import parse_space
    from .study import in_flight, tag_of, tell, trial_jobs, val_f1_by_epoch

    tag = tag_of(job)
    distributions = parse_space(tag["space"], f"recorded with sweep {tag['name']}").distributions()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=tag["name"], direction="maximize", pruner=pruner)
    jobs = [j for j in trial_jobs(store, tag["name"]) if j.job_id != job.job_id] + [job]
    asked = {}
    for other in sorted(jobs, key=lambda j: tag_of(j)["trial"]):
        study.enqueue_trial(tag_of(other)["params"])
        asked[other.job_id] = study.ask({k: distributions[k] for k in tag_of(other)["params"]})
    pruned = False
    for other in jobs:
        trial = asked[other.job_id]
        values = {**val_f1_by_epoch(store, other), **reported} if other is job else val_f1_by_epoch(store, other)
        for epoch in sorted(values):
            trial.report(values[epoch], epoch)
            pruned = trial.should_prune()
        if other is not job and not in_flight(other):
            tell(study, trial, other)
    return pruned


class PruneTrial:
    """A TrainerCallback (built lazily: transformers loads only when a trial runs) that stops the run as
    `cancelled` when the pruner says so; `trial`, when given, is the sweep process's own Optuna trial,
    told every report too so that its study keeps the curves."""

    def __new__(cls, store: JobStore, job: Job, pruner, pruner_name: str, trial=None, say=print):
        from transformers import TrainerCallback

        from ..training.recording import epoch_number
        from ..training.run import Cancelled

        class _PruneTrial(TrainerCallback):
            pruned = False
            reported: dict[int, float] = {}

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                if not state.is_world_process_zero or not metrics or "eval_f1" not in metrics:
                    return
                epoch, f1 = epoch_number(state.epoch), float(metrics["eval_f1"])
                self.reported = {**self.reported, epoch: f1}
                if trial is not None:
                    trial.report(f1, epoch)
                try:
                    prune = should_prune(store, job, self.reported, pruner)
                except StoreUnavailable as e:  # the run goes on (it journals); pruning waits for the store
                    say(f"pruning skipped at epoch {epoch}: {e}")
                    return
                if prune:
                    self.pruned = True
                    raise Cancelled(f"pruned by the sweep's {pruner_name} pruner at epoch {epoch} (val F1 {f1:.4f})")

        return _PruneTrial()


def trial_callbacks(store: JobStore, job: Job, say=print) -> list:
    """The pruning callback of a sweep trial run by a worker (none for other jobs, or pruner none)."""
    from .study import make_pruner, tag_of

    tag = tag_of(job)
    name = ((tag or {}).get("settings") or {}).get("pruner", "none")
    if tag is None or name == "none":
        return []
    return [PruneTrial(store, job, make_pruner(name), name, say=say)]
