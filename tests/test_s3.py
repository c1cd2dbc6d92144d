"""A run's files in S3 (moto's server on 127.0.0.1): key layout, round trips, multipart, errors."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import replace

import boto3
import pytest
from aws_servers import free_port

from receipt_layoutlm.errors import UserError
from receipt_layoutlm.s3 import S3Sync, UploadError, parse_s3_uri


@pytest.fixture
def bucket(aws_env) -> str:
    name = f"runs-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_parse_s3_uri():
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    assert parse_s3_uri("s3://bucket/") == ("bucket", "")
    assert parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    for bad in ("bucket/a", "s3://", "s3:///a", "https://bucket/a"):
        with pytest.raises(UserError, match="s3://BUCKET"):
            parse_s3_uri(bad)


def test_run_prefixes(aws_env):
    assert S3Sync("s3://b/training/", "job-1", aws_env).storage == {
        "bucket": "b",
        "run_root_prefix": "training/job-1/",
        "checkpoints_prefix": "training/job-1/checkpoints/",
        "best_prefix": "training/job-1/best/",
        "logs_prefix": "training/job-1/logs/",
    }
    plain = S3Sync("s3://b", "job-1", aws_env)
    assert (plain.run_root_prefix, plain.best_prefix) == ("job-1/", "job-1/best/")


def test_upload_and_download_a_directory(bucket, tmp_path, aws_env):
    source = tmp_path / "best"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text('{"a": 1}')
    (source / "sub" / "weights.bin").write_bytes(os.urandom(3000))
    sync = S3Sync(f"s3://{bucket}/training", "job-1", aws_env)
    sync.check()

    assert sync.upload_dir(source, sync.best_prefix) == (2, 3000 + 8)
    keys = sorted(o["Key"] for o in sync.client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["training/job-1/best/config.json", "training/job-1/best/sub/weights.bin"]

    back = tmp_path / "back"
    assert sync.download_dir(sync.best_prefix, back) == 2
    for name in ("config.json", "sub/weights.bin"):
        assert (back / name).read_bytes() == (source / name).read_bytes()


def test_large_file_goes_multipart(bucket, tmp_path, aws_env):
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    sync = S3Sync(f"s3://{bucket}", "job-2", aws_env)
    key = sync.checkpoints_prefix + "checkpoint-1/model.safetensors"
    assert sync.upload_file(big, key) == big.stat().st_size
    head = sync.client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == big.stat().st_size
    assert re.search(r"-2\"?$", head["ETag"])  # a multipart ETag ends with -<number of parts>


def test_missing_bucket(aws_env, tmp_path):
    sync = S3Sync("s3://no-such-bucket-here/x", "job", aws_env)
    with pytest.raises(UserError, match="S3 bucket no-such-bucket-here does not exist"):
        sync.check()
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UploadError, match="s3://no-such-bucket-here/x/job/logs/f.txt failed"):
        sync.upload_file(tmp_path / "f.txt", sync.logs_prefix + "f.txt")


def test_unreachable_endpoint(aws_env):
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=re.escape(f"Cannot reach the S3 endpoint {endpoint} for S3 bucket b1")):
        S3Sync("s3://b1", "job", replace(aws_env, s3_endpoint=endpoint)).check()


def test_no_credentials(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UserError, match="No AWS credentials found for S3 bucket b2.*AWS_ACCESS_KEY_ID"):
        S3Sync("s3://b2", "job", aws_env).check()


@pytest.mark.slow
def test_checkpoints_pruned_locally_are_deleted_from_s3(bucket, tmp_path, aws_env, monkeypatch):
    """--save-total-limit 1 over four epochs: S3 keeps the checkpoints the output dir keeps (the newest and
    the best) plus best/; the rows of the others say they were deleted, and a move never fetches them."""
    import shutil

    from conftest import run_cli

    from receipt_layoutlm.fleet.worker import config_from_record, fetch_from_s3
    from receipt_layoutlm.store import open_store

    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setenv("LAYOUTLM_JOB_STORE", uri)
    out = tmp_path / "pruned"
    result = run_cli(
        "train",
        *("--job-name", "pruned", "--dataset", "demo:24", "--pretrained", "tiny", "--max-seq-length", "64"),
        *("--epochs", "4", "--batch-size", "8", "--lr", "5e-4", "--save-total-limit", "1"),
        *("--output-dir", out, "--output-s3-uri", f"s3://{bucket}/runs"),
    )
    assert result.exit_code == 0, result.output
    store = open_store(uri, aws_env)
    (job,) = store.list_jobs("succeeded")
    sync = S3Sync(f"s3://{bucket}/runs", "pruned", aws_env)
    keys = [
        o["Key"]
        for page in sync.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]

    local = {p.name for p in out.glob("checkpoint-*")}
    in_s3 = {
        k.removeprefix(sync.checkpoints_prefix).split("/")[0] for k in keys if k.startswith(sync.checkpoints_prefix)
    }
    assert in_s3 == local and f"checkpoint-{job.results['best_step']}" in local
    assert {"runs/pruned/best/model.safetensors", "runs/pruned/logs/run.json"} <= set(keys)
    for name in local:  # every kept checkpoint is whole in S3
        assert {f"{sync.checkpoints_prefix}{name}/{f}" for f in ("model.safetensors", "trainer_state.json")} <= set(
            keys
        )

    rows = [r for r in store.checkpoints(job.job_id) if not r["is_best"]]
    assert sorted(r["epoch"] for r in rows) == [1, 2, 3, 4]
    deleted = {f"checkpoint-{r['step']}" for r in rows if r.get("s3_deleted")}
    assert deleted == {f"checkpoint-{r['step']}" for r in rows} - local and len(deleted) >= 2
    for r in rows:  # the attributes users' clients read are all still there
        assert r["s3_bucket"] == bucket and r["size_bytes"] > 0 and r["model_state"] is True
        assert bool(r.get("deleted_at")) == (f"checkpoint-{r['step']}" in deleted)
    logged = [e["message"] for e in store.logs(job.job_id) if "pruned locally" in e["message"]]
    assert len(logged) == len(deleted) and all("deleted" in m for m in logged)

    # A move to a machine without the output dir fetches the newest checkpoint that is still in S3, never a
    # row marked deleted (here one forged with a higher step and nothing behind it).
    newest = max(r["step"] for r in rows if not r.get("s3_deleted"))
    store.add_checkpoint(job.job_id, bucket, f"{sync.checkpoints_prefix}checkpoint-9999/", 1, 9999, 9)
    forged = next(r for r in store.checkpoints(job.job_id) if r["step"] == 9999)
    store.mark_checkpoint(forged, s3_deleted=True)
    shutil.rmtree(out)
    assert fetch_from_s3(store, job, config_from_record(job.job_config), say=lambda _: None, aws=aws_env)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == sorted(local)
    assert (out / f"checkpoint-{newest}" / "trainer_state.json").is_file()


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_a_deleted_checkpoint_row_keeps_every_attribute(backend, tmp_path, request):
    from receipt_layoutlm.store import open_store

    if backend == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        aws = request.getfixturevalue("aws_env")
        store = open_store(f"dynamodb://{request.getfixturevalue('fresh_table')}", aws)
    job = store.create_job("rows", {"epochs": 2})
    store.add_checkpoint(job.job_id, "b", "runs/rows/checkpoints/checkpoint-5/", 123, 5, 1)
    (row,) = store.checkpoints(job.job_id)
    store.mark_checkpoint(row, s3_deleted=True)
    store.mark_checkpoint({**row, "s3_deleted": True}, deleted_at="2026-11-26T19:00:00+00:00")
    (marked,) = store.checkpoints(job.job_id)
    assert marked == {**row, "s3_deleted": True, "deleted_at": "2026-11-26T19:00:00+00:00"}


@pytest.mark.slow
def test_all_checkpoints_of_a_job_trained_elsewhere_come_from_s3(bucket, tmp_path, aws_env, monkeypatch):
    """`evaluate --all-checkpoints JOB` on a machine without the job's output dir fetches run.json, the
    checkpoints still in S3 (model files, not the optimiser state) and best/, then scores each as training did."""
    import json
    import shutil

    from conftest import run_cli

    monkeypatch.setenv("LAYOUTLM_JOB_STORE", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "elsewhere"
    result = run_cli(
        "train",
        *("--job-name", "elsewhere", "--dataset", "demo:24", "--pretrained", "tiny", "--max-seq-length", "64"),
        *("--epochs", "3", "--batch-size", "8", "--lr", "5e-4", "--save-total-limit", "5"),
        *("--output-dir", out, "--output-s3-uri", f"s3://{bucket}/runs"),
    )
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "run.json").read_text())["epoch_metrics"]
    shutil.rmtree(out)  # this is another machine now

    scored = run_cli("evaluate", "--model", "elsewhere", "--all-checkpoints", "--json")
    assert scored.exit_code == 0, scored.output
    rows = json.loads(scored.output)["checkpoints"]
    assert [r["checkpoint"] for r in rows] == [f"checkpoint-{e['step']}" for e in recorded] + ["best"]
    for row, epoch in zip(rows, recorded):
        assert row["f1"] == pytest.approx(epoch["val_f1"], abs=1e-9)
    fetched = next((tmp_path / "cache").rglob("checkpoint-*"))
    assert (fetched / "model.safetensors").is_file() and not (fetched / "optimizer.pt").exists()
