"""`sweep`, `sweep show`, `jobs compare`: search spaces and presets, a phase3 grid and a TPE sweep of tiny
models recorded as tagged jobs, --continue without repeats, a pruned trial ending cancelled, and the
study rebuilt from a DynamoDB store's jobs."""

import json

import optuna
import pytest
from conftest import one_sentence_error
from conftest import run_cli as run

from receipt_layoutlm.errors import UserError
from receipt_layoutlm.store import open_store
from receipt_layoutlm.sweep.space import PRESETS, load_space, parse_space
from receipt_layoutlm.sweep.study import SweepSettings, rebuilt_study, run_sweep, tag_of, trial_jobs

TINY = ["--pretrained", "tiny", "--dataset", "demo:40", "--max-seq-length", "64"]


def store_of(env):
    return open_store(f"sqlite:///{env / 'jobs.db'}")


# --- the search space --------------------------------------------------------------------------
def test_space_file_yaml_and_json(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "params:\n"
        "  lr: {low: 1e-5, high: 5e-4, log: true}\n"  # PyYAML reads 1e-5 as text
        "  batch-size: [8, 16]\n"
        "  o_entity_ratio: [off, 2.0]\n"
        "  epochs: {low: 2, high: 4}\n"
        "fixed: {label_smoothing: 0.1}\n"
    )
    space = load_space(str(tmp_path / "s.yaml"), None)
    d = space.distributions()
    assert isinstance(d["lr"], optuna.distributions.FloatDistribution) and d["lr"].log and d["lr"].low == 1e-5
    assert d["batch_size"].choices == (8, 16) and d["o_entity_ratio"].choices == (None, 2.0)
    assert isinstance(d["epochs"], optuna.distributions.IntDistribution)
    assert space.settings({"lr": 1e-4, "batch_size": 8}) == {"label_smoothing": 0.1, "lr": 1e-4, "batch_size": 8}
    assert space.grid() is None  # a range is not a grid
    (tmp_path / "s.json").write_text(json.dumps({"params": {"warmup_ratio": [0.0, 0.1]}}))
    assert load_space(str(tmp_path / "s.json"), None).grid() == [{"warmup_ratio": 0.0}, {"warmup_ratio": 0.1}]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"params": {"lrr": [1]}}, "'lrr' is not a train flag"),
        ({"params": {"seed": [1, 2]}}, "cannot be searched"),
        ({"params": {"lr": {"low": 1e-3, "high": 1e-4}}}, "low < high"),
        ({"params": {"lr": [1e-4]}, "fixed": {"lr": 1e-4}}, "both searched and fixed"),
        ({"params": {}}, "searches nothing"),
        ({"parms": {}}, "unexpected ['parms']"),
    ],
)
def test_bad_spaces_are_one_sentence(data, fragment):
    with pytest.raises(UserError, match=None) as e:
        parse_space(data, "test")
    assert fragment in str(e.value)


def test_presets():
    base = {"dataset": "demo:40"}
    for name in PRESETS:
        load_space(None, name).check(base)
    phase3 = load_space(None, "phase3")
    assert phase3.sampler == "grid"
    settings = [phase3.settings(p) for p in phase3.grid()]
    phase2 = {"batch_size": 64, "lr": 6e-5, "warmup_ratio": 0.2, "label_smoothing": 0.1, "o_entity_ratio": 2.0}
    assert settings == [
        phase2,
        {**phase2, "lr": 5e-5},
        {**phase2, "o_entity_ratio": 1.8},
        {**phase2, "warmup_ratio": 0.1},
    ]
    small = load_space(None, "small-model").distributions()
    assert (small["lr"].low, small["lr"].high, small["lr"].log) == (1e-4, 5e-4, True)
    with pytest.raises(UserError, match="exactly one"):
        load_space(None, None)


# --- sweeps of tiny models -----------------------------------------------------------------------
@pytest.mark.slow
def test_phase3_grid_runs_four_trials_and_ranks_them(env):
    result = run("sweep", "--name", "p3", "--preset", "phase3", *TINY, "--epochs", "2", "--output-dir", env / "runs")
    assert result.exit_code == 0, result.output
    jobs = trial_jobs(store_of(env), "p3")
    assert [j.name for j in jobs] == ["p3-t0", "p3-t1", "p3-t2", "p3-t3"]
    assert all(j.status == "succeeded" and j.tags == {"sweep": "p3"} for j in jobs)
    assert sorted(tag_of(j)["params"]["variant"] for j in jobs) == sorted(PRESETS["phase3"]["variants"])
    for j in jobs:  # each its own output dir and best/, the variant's settings applied
        assert (env / "runs" / j.name / "best" / "label_map.json").is_file()
        assert j.job_config["output_dir"] == str(env / "runs" / j.name)
    by_variant = {tag_of(j)["params"]["variant"]: j.job_config for j in jobs}
    assert by_variant["lr-5e-5"]["lr"] == 5e-5 and by_variant["phase2"]["lr"] == 6e-5
    assert by_variant["warmup-0.1"]["warmup_ratio"] == 0.1 and by_variant["phase2"]["batch_size"] == 64
    listed = json.loads(run("jobs", "list", "--sweep", "p3", "--json").output)
    assert sorted(j["name"] for j in listed) == [j.name for j in jobs]

    shown = json.loads(run("sweep", "show", "p3", "--json").output)
    f1s = [t["best_f1"] for t in shown["trials"]]
    assert f1s == sorted(f1s, reverse=True) and len(f1s) == 4
    best = shown["trials"][0]
    assert shown["best_command"].startswith("layoutlm-cli train --job-name p3-best --dataset demo:40")
    assert "--batch-size 64" in shown["best_command"]
    text = run("sweep", "show", "p3", "--plot", env / "plots").output
    assert best["name"] in text and "layoutlm-cli train" in text
    assert (env / "plots" / "f1_vs_variant.png").is_file()
    # The grid is done: continuing adds nothing.
    again = run("sweep", "--name", "p3", "--continue", "--trials", "10")
    assert again.exit_code == 0 and len(trial_jobs(store_of(env), "p3")) == 4


@pytest.mark.slow
def test_tpe_sweep_continues_without_repeats(env):
    (env / "space.yaml").write_text(
        "params:\n  lr: {low: 1.0e-4, high: 1.0e-3, log: true}\n  warmup_ratio: [0.0, 0.1, 0.2]\n"
    )
    args = ["sweep", "--name", "tpe", "--space", env / "space.yaml", *TINY, "--epochs", "1", "--pruner", "none"]
    result = run(*args, "--trials", "2", "--output-dir", env / "runs")
    assert result.exit_code == 0, result.output
    assert len(trial_jobs(store_of(env), "tpe")) == 2
    one_sentence_error(run(*args, "--trials", "3"), "already has 2 trial(s)", "--continue")
    one_sentence_error(run("sweep", "--name", "tpe", "--continue", "--lr", "1e-4"), "leave out --lr")
    one_sentence_error(run("sweep", "--name", "nope", "--continue"), "No sweep 'nope'")
    result = run("sweep", "--name", "tpe", "--continue", "--trials", "3")
    assert result.exit_code == 0, result.output
    jobs = trial_jobs(store_of(env), "tpe")
    assert [tag_of(j)["trial"] for j in jobs] == [0, 1, 2]
    assert len({json.dumps(tag_of(j)["params"], sort_keys=True) for j in jobs}) == 3  # no trial repeated
    assert all(j.status == "succeeded" for j in jobs)
    assert jobs[2].job_config["output_dir"] == str(env / "runs" / "tpe-t2")  # the recorded flags
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{env / 'optuna.db'}")
    assert [t.value for t in study.trials] == [j.results["best_f1"] for j in jobs]
    assert [t.user_attrs["job_id"] for t in study.trials] == [j.job_id for j in jobs]


@pytest.mark.slow
def test_sweep_reads_its_data_once_into_a_snapshot(env):
    """Every trial trains on one snapshot of the data, named and recorded by its sha256; a continued sweep
    uses it even after the source file is gone, and refuses when it must read a source that changed."""
    import hashlib

    from receipt_layoutlm.training.config import TrainConfig
    from receipt_layoutlm.training.data import prepare_config_data

    source = env / "receipts.jsonl"
    assert run("dataset", "convert", "demo:40", source).exit_code == 0
    args = ["--space", _write(env / "s.json", {"params": {"warmup_ratio": [0.0, 0.1, 0.2, 0.3]}}), "--sampler", "grid"]
    tiny = ["--pretrained", "tiny", "--dataset", source, "--max-seq-length", "64", "--epochs", "1"]
    result = run("sweep", "--name", "snap", *args, *tiny, "--trials", "2", "--output-dir", env / "runs")
    assert result.exit_code == 0, result.output
    (snapshot,) = (env / "runs" / "snap").glob("data-*.jsonl")
    sha = hashlib.sha256(snapshot.read_bytes()).hexdigest()
    assert snapshot.name == f"data-{sha[:12]}.jsonl"
    jobs = trial_jobs(store_of(env), "snap")
    for job in jobs:
        assert job.job_config["dataset"] == str(snapshot)
        assert tag_of(job)["data"] == {"source": str(source), "dataset": str(snapshot), "sha256": sha,
                                       "receipts": 40, "dropped": {}}  # fmt: skip
    # The same receipts, so the same split as a run on the source itself.
    direct, _ = prepare_config_data(TrainConfig(job_name="direct", dataset=str(source), pretrained="tiny"))
    run_json = json.loads((env / "runs" / "snap-t0" / "run.json").read_text())
    assert run_json["split"]["val_receipt_ids"] == direct.counts["val_receipt_ids"]
    shown = json.loads(run("sweep", "show", "snap", "--json").output)
    assert shown["data"]["sha256"] == sha and f"--dataset {source}" in shown["best_command"]

    source.unlink()  # the trials read the snapshot, not the source
    result = run("sweep", "--name", "snap", "--continue", "--trials", "3")
    assert result.exit_code == 0, result.output
    assert trial_jobs(store_of(env), "snap")[2].job_config["dataset"] == str(snapshot)

    snapshot.unlink()  # gone, and the source now holds other receipts: the new trials would not compare
    assert run("dataset", "convert", "demo:30", source).exit_code == 0
    jobs_before = [(j.job_id, j.status) for j in trial_jobs(store_of(env), "snap")]
    one_sentence_error(run("sweep", "--name", "snap", "--continue", "--trials", "4"), "is gone", "another --name")
    assert [(j.job_id, j.status) for j in trial_jobs(store_of(env), "snap")] == jobs_before


def test_searched_flag_on_the_command_line_is_refused(env):
    one_sentence_error(
        run("sweep", "--name", "x", "--preset", "small-model", *TINY, "--lr", "1e-4"), "--lr is searched"
    )
    one_sentence_error(run("sweep", "--preset", "phase3", *TINY), "--name")
    assert store_of(env).list_jobs() == []


@pytest.mark.slow
def test_pruned_trial_ends_cancelled_never_failed(env):
    store_uri = f"sqlite:///{env / 'jobs.db'}"
    space = parse_space({"params": {"warmup_ratio": [0.0, 0.1]}}, "test")
    base = {"dataset": "demo:40", "pretrained": "tiny", "max_seq_length": 64, "epochs": 2.0,
            "output_dir": str(env / "runs")}  # fmt: skip
    always = optuna.pruners.ThresholdPruner(lower=1.1)  # every F1 is below 1.1: prune at the first evaluation
    study = run_sweep(store_uri, SweepSettings(name="pr", trials=1, sampler="grid"), space, base, pruner=always)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED]
    (job,) = trial_jobs(store_of(env), "pr")
    assert job.status == "cancelled"
    logs = [entry["message"] for entry in store_of(env).logs(job.job_id)]
    assert any("pruned by the sweep" in m and "epoch 1" in m for m in logs), logs
    assert [h["status"] for h in store_of(env).status_history(job.job_id)][-1] == "cancelled"


@pytest.mark.slow
def test_jobs_compare_shows_only_differences(env):
    for name, extra in (("a", []), ("b", ["--lr", "1e-4", "--box-level", "line"])):
        out = env / name
        result = run("train", "--job-name", name, *TINY, "--epochs", "1", "--output-dir", out, *extra)
        assert result.exit_code == 0, result.output
    data = json.loads(run("jobs", "compare", "a", "b", "--json").output)
    assert set(data["differences"]) == {"lr", "box_level"}
    assert data["differences"]["box_level"] == ["word", "line"]
    assert data["same_validation"] is True
    a = data["jobs"][0]
    assert a["best_epoch"] == 1 and a["per_label_f1"] and a["train_runtime"] > 0
    text = run("jobs", "compare", "a", "b").output
    assert "box_level" in text and "batch_size" not in text and "validation receipts: the same" in text
    one_sentence_error(run("jobs", "compare", "a"), "at least two")


# --- DynamoDB store: the study rebuilt from the trial jobs ------------------------------------------
@pytest.mark.slow
def test_dynamodb_store_rebuilds_the_same_study(env, fresh_table, aws_env, tmp_path):
    space = parse_space({"params": {"lr": {"low": 1e-4, "high": 1e-3, "log": True}}}, "test")
    base = {"dataset": "demo:40", "pretrained": "tiny", "max_seq_length": 64, "epochs": 1.0}
    runs = {}
    for uri in (f"sqlite:///{tmp_path / 'jobs.db'}", f"dynamodb://{fresh_table}"):
        settings = SweepSettings(name="dyn", trials=2, sampler="random", pruner="none")
        out = {**base, "output_dir": str(tmp_path / uri.split(":")[0])}
        runs[uri] = run_sweep(uri, settings, space, out, aws=aws_env)
    sqlite_study, dynamo_study = runs.values()
    jobs = trial_jobs(open_store(f"dynamodb://{fresh_table}", aws_env), "dyn")
    assert [tag_of(j)["trial"] for j in jobs] == [0, 1]
    rebuilt = rebuilt_study(open_store(f"dynamodb://{fresh_table}", aws_env), jobs, space)
    for study in (dynamo_study, rebuilt):
        assert [t.params for t in study.trials] == [t.params for t in sqlite_study.trials]
        assert [t.value for t in study.trials] == pytest.approx([t.value for t in sqlite_study.trials])
    assert [t.intermediate_values for t in rebuilt.trials] == [t.intermediate_values for t in sqlite_study.trials]
    # Continued on DynamoDB: one more trial, not a repeat of the first two.
    run_sweep(f"dynamodb://{fresh_table}", SweepSettings(name="dyn", trials=3), None, None, resume=True, aws=aws_env)
    jobs = trial_jobs(open_store(f"dynamodb://{fresh_table}", aws_env), "dyn")
    assert len(jobs) == 3 and len({tag_of(j)["params"]["lr"] for j in jobs}) == 3


@pytest.mark.slow
def test_submitted_trials_are_run_by_a_worker(env, tmp_path):
    """--submit: trials go on the queue, a real worker process runs them, the sweep tells Optuna."""
    from test_fleet_faults import env_for, start

    store_uri = f"sqlite:///{env / 'jobs.db'}"
    worker = start("worker", "--poll", "0.5", "--idle-exit", "10", env=env_for(store_uri), log=tmp_path / "w.log")
    try:
        result = run(
            "sweep", "--name", "q", "--space", _write(env / "q.json", {"params": {"warmup_ratio": [0.0, 0.1]}}),
            *TINY, "--epochs", "1", "--submit", "--parallel", "2", "--poll", "0.5", "--trials", "2",
            "--output-dir", env / "runs",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    finally:
        assert worker.wait(timeout=300) == 0, (tmp_path / "w.log").read_text()
    jobs = trial_jobs(store_of(env), "q")
    assert [j.status for j in jobs] == ["succeeded", "succeeded"]
    assert all(j.queue == "layoutlm-training" and j.worker for j in jobs)
    study = optuna.load_study(study_name="q", storage=f"sqlite:///{env / 'optuna.db'}")
    assert sorted(t.value for t in study.trials) == sorted(j.results["best_f1"] for j in jobs)


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_parallel_trials_run_at_once_on_a_local_worker(env, monkeypatch):
    """--parallel 2 without --submit: a worker started by the sweep runs two trials at the same time, each
    with half of the cores, from the sweep's own queue."""
    monkeypatch.setenv("LAYOUTLM_IMDS_ENDPOINT", "http://127.0.0.1:9")
    space = _write(env / "p.json", {"params": {"warmup_ratio": [0.0, 0.1]}})
    result = run(
        "sweep", "--name", "par", "--space", space, "--sampler", "grid", *TINY, "--epochs", "2", "--parallel", "2",
        "--poll", "0.5",
        "--output-dir", env / "runs",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    store = store_of(env)
    jobs = trial_jobs(store, "par")
    assert [j.status for j in jobs] == ["succeeded", "succeeded"]
    assert {j.queue for j in jobs} == {"sweep-par"} and len({j.worker for j in jobs}) == 1
    spans = []
    for job in jobs:
        history = store.status_history(job.job_id)
        started = min(h["updated_at"] for h in history if h["status"] == "running")
        ended = max(h["updated_at"] for h in history if h["status"] == "succeeded")
        spans.append((started, ended))
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # each started before the other ended
    study = optuna.load_study(study_name="par", storage=f"sqlite:///{env / 'optuna.db'}")
    assert sorted(t.value for t in study.trials) == sorted(j.results["best_f1"] for j in jobs)
    assert "pid" in result.output and "cpu-slots" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_a_worker_prunes_a_hopeless_trial(env, tmp_path, pruner):
    """Trials run by a worker (--submit) are pruned in the worker's child from what the store records: the
    last trial, whose learning rate is too small to learn anything, ends cancelled, not failed."""
    from test_fleet_faults import env_for, start

    store_uri = f"sqlite:///{env / 'jobs.db'}"
    worker = start("worker", "--poll", "0.5", "--idle-exit", "15", env=env_for(store_uri), log=tmp_path / "w.log")
    try:
        result = run(
            "sweep", "--name", f"pw-{pruner}", "--sampler", "grid",
            "--space", _write(env / "q.json", {"params": {"lr": [1e-3, 8e-4, 6e-4, 1e-9]}}),
            "--pruner", pruner, *TINY, "--epochs", "4", "--submit", "--poll", "0.5",
            "--output-dir", env / "runs",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    finally:
        assert worker.wait(timeout=300) == 0, (tmp_path / "w.log").read_text()
    store = store_of(env)
    jobs = trial_jobs(store, f"pw-{pruner}")
    hopeless = jobs[-1]
    assert tag_of(hopeless)["params"] == {"lr": 1e-9} and hopeless.status == "cancelled"
    logs = [entry["message"] for entry in store.logs(hopeless.job_id)]
    assert any(f"pruned by the sweep's {pruner} pruner" in m for m in logs), logs
    assert "failed" not in {j.status for j in jobs} and jobs[0].status == "succeeded"
    study = optuna.load_study(study_name=f"pw-{pruner}", storage=f"sqlite:///{env / 'optuna.db'}")
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED


@pytest.mark.slow
@pytest.mark.aws
def test_a_table_sweep_reads_the_table_once_and_workers_read_the_snapshot_from_s3(aws_env, fresh_table, tmp_path):
    """The AWS setting: receipts in the DynamoDB table, jobs in the same table, --output-s3-uri, trials on
    the queue. The table is read once; the snapshot goes to S3 and the worker's trials train on it."""
    import hashlib

    import boto3
    from test_fleet_faults import env_for, start

    s3 = boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="sweeps")
    source = tmp_path / "receipts.jsonl"
    assert run("dataset", "convert", "demo:30", source).exit_code == 0
    assert run("dataset", "import", source, "--dynamo-table", fresh_table).exit_code == 0
    store_uri = f"dynamodb://{fresh_table}"
    worker = start("worker", "--poll", "0.5", "--idle-exit", "10", env=env_for(store_uri), log=tmp_path / "w.log")
    try:
        result = run(
            "sweep", "--name", "tbl", "--dynamo-table", fresh_table, "--sampler", "grid",
            "--space", _write(tmp_path / "s.json", {"params": {"warmup_ratio": [0.0, 0.1]}}),
            "--pretrained", "tiny", "--max-seq-length", "64", "--epochs", "1", "--submit", "--parallel", "2",
            "--poll", "0.5", "--output-dir", tmp_path / "runs", "--output-s3-uri", "s3://sweeps/runs",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    finally:
        assert worker.wait(timeout=300) == 0, (tmp_path / "w.log").read_text()
    store = open_store(store_uri, aws_env)
    jobs = trial_jobs(store, "tbl")
    assert [j.status for j in jobs] == ["succeeded", "succeeded"]
    data = tag_of(jobs[0])["data"]
    assert data["source"] == f"dynamodb://{fresh_table}" and data["receipts"] == 30
    key = f"runs/tbl/data-{data['sha256'][:12]}.jsonl"
    assert all(j.job_config["dataset"] == f"s3://sweeps/{key}" and tag_of(j)["data"] == data for j in jobs)
    body = s3.get_object(Bucket="sweeps", Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == data["sha256"]
    assert (tmp_path / "runs" / "tbl" / f"data-{data['sha256'][:12]}.jsonl").read_bytes() == body
    # A trial's checkpoints are scored on its own validation receipts, read from the snapshot in S3.
    scored = run("evaluate", "--model", "tbl-t0", "--all-checkpoints", "--json", "--job-store", store_uri)
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["dataset"] == f"s3://sweeps/{key}"
