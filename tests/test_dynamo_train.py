"""The seed's Phase 1 run end to end against local AWS servers (DynamoDB Local, moto S3).

Receipts are imported into a fresh receipts table, `layoutlm-cli train --dynamo-table T`
(no --dataset) trains on its VALID labels, records the job in the same table and syncs
run.json, checkpoints and best/ to S3. Everything is then checked with a raw boto3
client, i.e. with the queries the users already run (shared/seed, shared/spec), not our
own store code.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from conftest import one_sentence_error
from conftest import run_cli as run

from receipt_layoutlm.sources.jsonl import write_jsonl
from receipt_layoutlm.sources.wildreceipt import read_wildreceipt

JOB = "receipts-validate"
N_RECEIPTS = 60
ALLOWED = ("MERCHANT_NAME", "PHONE_NUMBER", "ADDRESS_LINE", "DATE", "TIME", "PRODUCT_NAME", "AMOUNT")


def phase1(table: str, output_dir, s3_uri: str) -> list[str]:
    """The seed's Phase 1 command, with a tiny model and small batches for speed."""
    args = [
        "train",
        "--job-name",
        JOB,
        "--dynamo-table",
        table,
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "6e-5",
        "--warmup-ratio",
        "0.2",
        "--label-smoothing",
        "0.1",
        "--o-entity-ratio",
        "2.0",
        "--merge-amounts",
    ]
    for label in ALLOWED:
        args += ["--allowed-label", label]
    return args + ["--pretrained", "tiny", "--output-dir", str(output_dir), "--output-s3-uri", s3_uri]


@pytest.fixture
def env(aws_env, monkeypatch):
    """Only the flags pick the table, job store and bucket."""
    for name in ("DYNAMO_TABLE_NAME", "LAYOUTLM_JOB_STORE", "LAYOUTLM_TRAINING_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    return aws_env


@pytest.mark.slow
def test_phase1_validation_run_from_dynamodb_to_s3(env, wildreceipt_file, tmp_path, aws_env):
    ddb = boto3.client("dynamodb", endpoint_url=env.dynamodb_endpoint, region_name="us-east-1")
    s3 = boto3.client("s3", endpoint_url=env.s3_endpoint, region_name="us-east-1")
    table, bucket = f"receipts-{uuid.uuid4().hex[:10]}", f"bucket-{uuid.uuid4().hex[:10]}"

    # --- the table and its receipts --------------------------------------------------
    result = run("dynamo", "create-table", table)
    assert result.exit_code == 0, result.output
    receipts, _ = read_wildreceipt(wildreceipt_file)
    subset = receipts[:N_RECEIPTS]
    labelled = sum(any(w.label != "O" for w in r.words) for r in subset)
    source = tmp_path / "subset.jsonl"
    write_jsonl(subset, source)
    result = run("dataset", "import", source, "--dynamo-table", table)
    assert result.exit_code == 0, result.output
    assert f"Imported {N_RECEIPTS} receipts" in result.output

    result = run("dataset", "stats", "--dynamo-table", table, "--merge-amounts")
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # rich wraps long lines
    assert f"dynamodb://{table}" in printed and f"{labelled} receipts" in printed and "AMOUNT" in printed

    # --- errors before training: a missing bucket, a missing table -----------------------
    s3.create_bucket(Bucket=bucket)
    result = run(*phase1(table, tmp_path / "no-bucket", "s3://missing-bucket/x"))
    one_sentence_error(result, "missing-bucket", "does not exist")
    assert not (tmp_path / "no-bucket").exists()  # nothing trained, nothing written
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    result = run(*phase1(missing, tmp_path / "no-table", f"s3://{bucket}/runs"))
    one_sentence_error(result, f"DynamoDB table {missing} not found")
    # neither left a job behind
    assert (
        ddb.query(
            TableName=table,
            IndexName="GSI2",
            KeyConditionExpression="GSI2PK = :n",
            ExpressionAttributeValues={":n": {"S": f"JOB_NAME#{JOB}"}},
        )["Items"]
        == []
    )

    # --- Phase 1 ---------------------------------------------------------------------
    out = tmp_path / "run"
    result = run(*phase1(table, out, f"s3://{bucket}/runs"))
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output and "best val F1" in result.output

    # jobs by status: the seed's exact query
    items = ddb.query(
        TableName=table,
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :status",
        ExpressionAttributeValues={":status": {"S": "STATUS#succeeded"}},
    )["Items"]
    jobs = [i for i in items if i["TYPE"]["S"] == "JOB"]
    assert len(jobs) == 1 and jobs[0]["name"]["S"] == JOB and jobs[0]["status"]["S"] == "succeeded"
    job = jobs[0]
    job_id = job["PK"]["S"].removeprefix("JOB#")
    assert str(uuid.UUID(job_id)) == job_id and job_id in result.output
    assert {i["TYPE"]["S"] for i in items} == {"JOB", "JOB_STATUS"}  # JobStatus rows share the partition

    config = job["job_config"]["M"]
    assert config["dynamo_table"] == {"S": table} and config["dataset"] == {"NULL": True}
    assert config["merge_amounts"] == {"BOOL": True} and float(config["o_entity_ratio"]["N"]) == 2.0
    assert [v["S"] for v in config["allowed_labels"]["L"]] == list(ALLOWED)
    results = job["results"]["M"]
    assert 0 <= float(results["best_f1"]["N"]) <= 1 and int(results["epochs_completed"]["N"]) == 2

    storage = {k: v["S"] for k, v in job["storage"]["M"].items()}
    assert storage == {
        "bucket": bucket,
        "run_root_prefix": f"runs/{JOB}/",
        "checkpoints_prefix": f"runs/{JOB}/checkpoints/",
        "best_prefix": f"runs/{JOB}/best/",
        "logs_prefix": f"runs/{JOB}/logs/",
    }
    assert all(v.endswith("/") for k, v in storage.items() if k.endswith("_prefix"))

    pk = {":pk": {"S": f"JOB#{job_id}"}}

    def under(prefix: str) -> list[dict]:
        return ddb.query(
            TableName=table,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ExpressionAttributeValues={**pk, ":sk": {"S": prefix}},
        )["Items"]

    # status history, oldest first
    assert [i["status"]["S"] for i in under("STATUS#")] == ["pending", "running", "succeeded"]

    # a job by name
    named = ddb.query(
        TableName=table,
        IndexName="GSI2",
        KeyConditionExpression="GSI2PK = :n",
        ExpressionAttributeValues={":n": {"S": f"JOB_NAME#{JOB}"}},
        ScanIndexForward=False,
    )["Items"]
    assert [i["PK"]["S"] for i in named] == [f"JOB#{job_id}"]

    # one metric of the job: the trailing '#' keeps val_f1 apart from other names
    f1 = under("METRIC#val_f1#")
    assert len(f1) == 2 and all(i["metric_name"]["S"] == "val_f1" for i in f1)
    assert [int(i["epoch"]["N"]) for i in f1] == [1, 2]
    assert all(int(i["step"]["N"]) > 0 and "N" in i["value"] for i in f1)
    assert float(results["best_f1"]["N"]) == max(float(i["value"]["N"]) for i in f1)

    # logs: run_config at the start, run_summary at the end
    messages = [i["message"]["S"] for i in under("LOG#")]
    kinds = [json.loads(m).get("type") for m in messages if m.startswith("{")]
    assert kinds == ["run_config", "run_summary"]
    assert not [i for i in under("LOG#") if i["log_level"]["S"] == "ERROR"]

    # checkpoints: one per epoch plus best/, all in the bucket
    checkpoints = under("CHECKPOINT#")
    assert len(checkpoints) >= 2
    assert [c["is_best"]["BOOL"] for c in checkpoints].count(True) == 1
    assert all(c["s3_bucket"]["S"] == bucket and int(c["size_bytes"]["N"]) > 0 for c in checkpoints)
    best_row = next(c for c in checkpoints if c["is_best"]["BOOL"])
    assert best_row["s3_key"]["S"] == storage["best_prefix"]

    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    }
    assert f"runs/{JOB}/best/model.safetensors" in keys
    assert f"runs/{JOB}/best/label_map.json" in keys
    assert f"runs/{JOB}/logs/run.json" in keys
    assert any(
        k.startswith(f"runs/{JOB}/checkpoints/checkpoint-") and k.endswith("/model.safetensors") for k in keys
    ), sorted(keys)
    for c in checkpoints:  # every checkpoint row points at uploaded files
        assert any(k.startswith(c["s3_key"]["S"]) for k in keys), c["s3_key"]["S"]
    run_json = json.loads(s3.get_object(Bucket=bucket, Key=f"runs/{JOB}/logs/run.json")["Body"].read())
    assert run_json["job_id"] == job_id and run_json["status"] == "succeeded"
    assert run_json["dataset"]["receipts"] == labelled

    # best/ from S3 reloads with plain transformers and predicts
    from transformers import LayoutLMForTokenClassification

    from receipt_layoutlm.inference.predict import predict_receipts
    from receipt_layoutlm.s3 import S3Sync

    downloaded = tmp_path / "downloaded-best"
    assert S3Sync(f"s3://{bucket}/runs", JOB, aws_env).download_dir(storage["best_prefix"], downloaded) >= 3
    model = LayoutLMForTokenClassification.from_pretrained(downloaded)
    assert model.config.id2label[0] == "O" and "B-AMOUNT" in model.config.label2id
    summary = predict_receipts(downloaded, str(source))
    assert summary["receipts"] == N_RECEIPTS and 0 <= summary["f1"] <= 1

    # the CLI reads the same job back from the table
    listed = run("jobs", "list", "--status", "succeeded", "--dynamo-table", table, "--json")
    assert listed.exit_code == 0, listed.output
    assert [(j["job_id"], j["name"]) for j in json.loads(listed.output)] == [(job_id, JOB)]
    shown = run("jobs", "show", JOB, "--dynamo-table", table)
    assert shown.exit_code == 0, shown.output
    assert job_id in shown.output and "val F1" in shown.output and f"s3://{bucket}/runs/{JOB}/" in shown.output
