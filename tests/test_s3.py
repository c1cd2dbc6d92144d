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
