"""`layoutlm-cli sweep`: search the training recipe with Optuna; `sweep show NAME`: what it found.

`sweep` takes every flag of `train` (its parameters are reused; `--job-name` becomes `--name`, and
trial k is the job `<name>-t<k>`): flags in the search space are chosen per trial, the others are
fixed for all trials. See README.md, "Searching the recipe".
"""

from __future__ import annotations

import json
import shlex
import warnings
from dataclasses import MISSING, fields

import click
from click.core import ParameterSource
from rich.table import Table
from rich.text import Text

from ..errors import UserError
from ..fleet.queue import DEFAULT_QUEUE
from ..training.config import TrainConfig
from .common import aws_options, console, job_store_option, with_store
from .options import train_options

SWEEP_OPTIONS = {
    "name",
    "space",
    "preset",
    "trials",
    "sampler",
    "pruner",
    "resume",
    "submit",
    "queue",
    "parallel",
    "poll",
}


@click.group(invoke_without_command=True)
@click.option("--name", help="Name of the sweep; trial k is the job <name>-t<k>.")
@click.option("--space", type=click.Path(dir_okay=False), help="Search space file (YAML or JSON); see docs.")
@click.option("--preset", type=click.Choice(["phase3", "small-model", "base-model"]), help="A built-in search space.")
@click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True, help="Trials in the whole sweep.")
@click.option(
    "--sampler",
    type=click.Choice(["tpe", "random", "grid"]),
    help="Optuna sampler, seeded with --seed [default: the space's, else tpe].",
)
@click.option(
    "--pruner",
    type=click.Choice(["none", "median", "hyperband"]),
    default="median",
    show_default=True,
    help="Stops trials whose val F1 falls behind (their jobs end cancelled), wherever they run.",
)
@click.option("--continue", "resume", is_flag=True, help="Add to the recorded sweep --name, with its space and flags.")
@click.option("--submit", is_flag=True, help="Put trials on the queue for `layoutlm-cli worker`s, and wait for them.")
@click.option("--queue", default=DEFAULT_QUEUE, show_default=True, help="Queue of --submit.")
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Trials running at once: here, one per GPU (else sharing the CPU's cores); with --submit, queued at once.",
)
@click.option("--poll", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds between looks.")
@train_options(exclude=("job_name",))
@job_store_option
@aws_options
@click.pass_context
def sweep(
    ctx, name, space, preset, trials, sampler, pruner, resume, submit, queue, parallel, poll, job_store, aws, **settings
):
    """Search the training recipe with Optuna; every trial is a recorded job (see also `sweep show`)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..store import resolve_store_uri
    from ..sweep.space import load_space
    from ..sweep.study import SweepSettings, run_sweep

    if not name or "/" in name:
        raise UserError("Pass --name NAME (no '/') for the sweep; its trials are the jobs NAME-t0, NAME-t1, ...")
    given = [k for k in settings if k != "dynamo_table" and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE]
    base = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    s = SweepSettings(name=name, trials=trials, pruner=pruner, seed=base["seed"], submit=submit, queue=queue,
                      parallel=parallel, poll=poll)  # fmt: skip
    if ctx.get_parameter_source("pruner") == ParameterSource.COMMANDLINE:
        given.append("pruner")
    if resume:
        if given or space or preset or sampler:
            flags = [f"--{k.replace('_', '-')}" for k in given] + [
                f for f, v in (("--space", space), ("--preset", preset), ("--sampler", sampler)) if v
            ]
            raise UserError(
                f"--continue uses the space and flags recorded with sweep {name!r}; leave out {', '.join(flags)}."
            )
        search = None
    else:
        search = load_space(space, preset)
        given = [k for k in given if k != "pruner"]
        for k in given:  # a flag given on the command line wins over the space's fixed value ...
            search.fixed.pop(k, None)
        clash = sorted(set(given) & search.searched())  # ... but a searched one cannot be fixed
        if clash:
            flags = ", ".join("--" + k.replace("_", "-") for k in clash)
            raise UserError(f"{flags} is searched by the space; leave it off the command line or out of the space.")
        s.sampler = sampler or search.sampler or "tpe"
        if submit:
            from .fleet import check_submittable

            check_submittable(TrainConfig(**{**base, **search.settings({}), "job_name": f"{name}-t0"}), aws)
    run_sweep(resolve_store_uri(job_store, base.get("dynamo_table")), s, search, base, resume, aws, say=console.print)
    console.print(Text.assemble(("done", "bold green"), f" sweep {name}; `layoutlm-cli sweep show {name}` ranks it"))


def train_command(record: dict, job_name: str) -> str:
    """`layoutlm-cli train ...` with every flag of a job's config that differs from train's default."""
    parts = ["layoutlm-cli", "train", "--job-name", job_name]
    for f in fields(TrainConfig):
        if f.name in ("job_name", "output_dir") or f.name not in record:
            continue
        value = record[f.name]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if value == default or (f.name == "window_overlap" and value == record.get("max_seq_length", 512) // 4):
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag)
        elif isinstance(value, list):
            for v in value:
                parts += [flag, shlex.quote(str(v))]
        elif value is not None:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


@sweep.command("show")
@click.argument("sweep_name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", type=click.Path(file_okay=False), help="Write a PNG of val F1 against each parameter here.")
@with_store
def sweep_show(sweep_name, as_json, plot, store):
    """A sweep's trials ranked by best val F1, the best one as a train command, and parameter importances."""
    from ..sweep.study import rebuilt_study, recorded_sweep, tag_of, trial_jobs

    jobs = trial_jobs(store, sweep_name)
    if not jobs:
        raise UserError(f"No sweep {sweep_name!r} in {store.description}; `layoutlm-cli jobs list` shows the jobs.")
    ranked = sorted(jobs, key=lambda j: -(j.results.get("best_f1") or -1) if j.status == "succeeded" else 2)
    rows = [
        {
            "trial": tag_of(j)["trial"],
            "job_id": j.job_id,
            "name": j.name,
            "status": j.status,
            "params": tag_of(j)["params"],
            "best_f1": j.results.get("best_f1"),
            "best_epoch": j.results.get("best_epoch"),
            "train_runtime": j.results.get("train_runtime"),
        }
        for j in ranked
    ]
    best = next((j for j in ranked if j.status == "succeeded"), None)
    # Trials trained on the sweep's snapshot; the command trains on the data it was taken from.
    data = tag_of(jobs[0]).get("data")
    command = None
    if best:
        command = train_command(
            {**best.job_config, "dataset": tag_of(best)["base"].get("dataset")}, f"{sweep_name}-best"
        )
    space, _, _ = recorded_sweep(jobs)
    study = rebuilt_study(store, jobs, space)
    importances = param_importances(study)
    if plot and best:
        from ..sweep.plot import plot_sweep

        plot_sweep(rows, plot)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "sweep": sweep_name,
                    "data": data,
                    "trials": rows,
                    "best_command": command,
                    "importances": importances,
                },
                indent=2,
                default=str,
            )
        )
        return
    names = sorted({k for r in rows for k in r["params"]})
    table = Table("trial", *names, "best F1", "epoch", "status", "runtime s", "job id")
    for r in rows:
        f1 = r["best_f1"]
        table.add_row(
            str(r["trial"]),
            *(_short(r["params"].get(n, "")) for n in names),
            f"{f1:.4f}" if isinstance(f1, (int, float)) and r["status"] == "succeeded" else "",
            str(r["best_epoch"] or ""),
            r["status"],
            str(r["train_runtime"] or ""),
            r["job_id"],
        )
    console.print(table)
    if data:
        console.print(
            f"data: {data['receipts']} receipts from {data['source']}, read once into {data['dataset']} "
            f"(sha256 {data['sha256'][:12]})",
            highlight=False,
        )
    if command:
        console.print(
            f"best: trial {tag_of(best)['trial']} ({best.name}), val F1 {best.results['best_f1']:.4f}; train it with"
        )
        console.print(command, highlight=False, soft_wrap=True)
    if importances:
        console.print("parameter importance (Optuna): " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
    else:
        console.print("parameter importance: needs at least 2 completed trials with differing parameters")


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "off" if value is None else str(value)


def param_importances(study) -> dict:
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():  # e.g. "importances will be equal" when all trials scored the same
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # no parameter varied across the completed trials
        return {}
