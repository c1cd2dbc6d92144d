"""What `train` checks before a job exists, the output-dir claim and file modes (issue 6)."""

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from receipt_layoutlm.cli import cli
from receipt_layoutlm.errors import UserError
from receipt_layoutlm.store import open_store
from receipt_layoutlm.training.artifacts import OutputDirClaim, atomic_write_json, replace_dir
from receipt_layoutlm.training.config import TrainConfig, check_config


def train(out, *extra, dataset="demo:12", name="checks"):
    args = ["train", "--job-name", name, "--dataset", dataset, "--pretrained", "tiny", "--max-seq-length", "64"]
    # --window-overlap 16 given, so that each check also fails on code with the old default of 128
    args += ["--window-overlap", "16", "--batch-size", "4", "--output-dir", str(out), *map(str, extra)]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def refused(result, *fragments):
    assert result.exit_code != 0 and "Traceback" not in result.output and "error:" in result.output, result.output
    for f in fragments:
        assert f in " ".join(result.output.split()), result.output


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--val-ratio", "1"], ["--val-ratio must be between 0 and 1", "got 1.0"]),
        (["--val-ratio", "0"], ["--val-ratio must be between 0 and 1", "0.1 = one receipt in ten"]),
        (["--max-steps", "0"], ["--max-steps must be a positive number", "-1 for no limit", "got 0"]),
        (["--window-overlap", "40"], ["--window-overlap", "--max-seq-length 64", "at most 31", "got 40"]),
    ],
)
def test_flags_are_refused_before_a_job_exists(env, flags, fragments):
    refused(train(env / "out", *flags), *fragments)
    assert open_store().list_jobs() == [] and not (env / "out" / "run.json").exists()


def test_window_overlap_default_scales_with_the_length():
    cfg = TrainConfig(job_name="t", dataset="demo", max_seq_length=64)
    check_config(cfg)
    assert cfg.window_overlap == 16 and TrainConfig(job_name="t").window_overlap == 128


def test_unusable_output_dir_is_refused_before_a_job_exists(env):
    a_file = env / "a-file"
    a_file.write_text("not a directory")
    refused(train(a_file), f"--output-dir {a_file} is a file")
    refused(train(a_file / "below"), "Cannot create the output directory", "pass a writable --output-dir")
    assert open_store().list_jobs() == []


def test_bad_data_leaves_no_job_and_the_corrected_command_runs(env):
    out = env / "out"
    refused(train(out, dataset=str(env / "typo.jsonl")), "does not exist")
    refused(train(out, "--allowed-label", "REFUND"), "No entity label is left")
    assert open_store().list_jobs() == [] and not out.exists(), "a refused run leaves no directory behind"
    result = train(out, "--max-steps", "2", "--epochs", "1")
    assert result.exit_code == 0, result.output
    (job,) = open_store().list_jobs()
    assert job.status == "succeeded" and job.job_config["window_overlap"] == 16
    assert not (out / ".claim").exists(), "the claim is released when the run ends"


def test_a_run_that_failed_before_training_may_be_replaced(env):
    out = env / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"job_id": "old", "job_name": "checks", "status": "failed"}))
    result = train(out, "--max-steps", "2", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["job_id"] != "old"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_corrupt_run_json_on_resume_is_one_sentence(env, content):
    out = env / "out"
    out.mkdir()
    (out / "run.json").write_text(content)
    refused(train(out, "--resume"), f"{out / 'run.json'}", "--overwrite-output-dir")


def test_claim_is_exclusive_and_a_dead_owner_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = OutputDirClaim(out, "a").acquire()
    with pytest.raises(UserError, match=r"in use by job 'a' \(pid \d+ on "):
        OutputDirClaim(out, "b").acquire()
    first.release()
    assert not (out / ".claim").exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".claim").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "job_name": "gone"}))
    taken = OutputDirClaim(out, "c").acquire()
    assert json.loads((out / ".claim").read_text())["job_name"] == "c"
    taken.release()

    (out / ".claim").write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "job_name": "far"}))
    with pytest.raises(UserError, match="on elsewhere"):
        OutputDirClaim(out, "d").acquire()


def test_two_runs_started_together_cannot_share_an_output_dir(tmp_path):
    env = {**os.environ, "LAYOUTLM_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}
    env.pop("DYNAMO_TABLE_NAME", None)
    args = ["--job-name", "twin", "--dataset", "demo:12", "--pretrained", "tiny", "--max-seq-length", "64"]
    args += ["--window-overlap", "16", "--max-steps", "2", "--epochs", "1", "--output-dir", str(tmp_path / "twin")]
    go = tmp_path / "go"
    # Both processes import everything first, then start training when `go` appears: the same moment.
    start_together = (
        "import os, sys, time; import receipt_layoutlm.training.run; from receipt_layoutlm.cli import main\n"
        f"open({str(tmp_path)!r} + f'/ready-{{os.getpid()}}', 'w').close()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
        "main()"
    )
    cmd = [sys.executable, "-c", start_together, "train", *args]
    procs = [subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in "ab"]
    while len(list(tmp_path.glob("ready-*"))) < 2 and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    go.touch()
    results = [(p.wait(timeout=600), p.stdout.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(out for code, out in results if code == 2)
    # The loser may find the claim complete (names the job), still being written, or the run finished.
    refusals = ("in use by job 'twin'", "is in use by another run", "already holds job 'twin'")
    assert any(r in loser for r in refusals) and "Traceback" not in loser, loser
    store = open_store(env["LAYOUTLM_JOB_STORE"])
    (job,) = store.list_jobs()
    assert job.status == "succeeded"
    label_map = json.loads((tmp_path / "twin" / "best" / "label_map.json").read_text())
    assert label_map["job_id"] == job.job_id


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "run.json", {"a": 1})
        replace_dir(tmp_path / "best", lambda d: atomic_write_json(d / "label_map.json", {}))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "best").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "best" / "label_map.json").stat().st_mode) == 0o644
