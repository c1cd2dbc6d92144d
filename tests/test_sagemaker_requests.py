"""Every SageMaker request the tool makes (CreateTrainingJob, DescribeTrainingJob, StopTrainingJob), checked
against the service's own API model by a real boto3 client under botocore's Stubber: a wrong parameter
name or type fails the call, as AWS would refuse it. The job store and S3 are the local servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import ANY, Stubber
from conftest import one_sentence_error, run_cli

from receipt_layoutlm.aws import AwsSettings
from receipt_layoutlm.errors import UserError
from receipt_layoutlm.fleet import sagemaker as sm
from receipt_layoutlm.sources.demo import generate_receipts
from receipt_layoutlm.sources.jsonl import write_jsonl
from receipt_layoutlm.store import open_store

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/layoutlm-train:1"
ROLE = "arn:aws:iam::123456789012:role/layoutlm-sagemaker"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/{}"
TRAIN_FLAGS = ["--pretrained", "tiny", "--epochs", "2", "--merge-amounts", "--allowed-label", "DATE"]


@pytest.fixture
def stubbed(monkeypatch):
    """A real SageMaker client whose requests the Stubber validates and answers; the tool gets it."""
    client = boto3.client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    sent = []
    client.meta.events.register("provide-client-params.sagemaker.*", lambda params, **kw: sent.append(params))
    monkeypatch.setattr(sm, "sagemaker_client", lambda aws: client)
    with Stubber(client) as stubber:
        stubber.sent = sent
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def bucket(aws_env) -> str:
    boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1").create_bucket(Bucket="runs")
    return "runs"


@pytest.fixture
def snapshot(tmp_path):
    path = tmp_path / "receipts.jsonl"
    write_jsonl(generate_receipts(40, seed=1), path)
    return path


def submit_flags(table, snapshot, *extra):
    return [
        "submit",
        "--backend",
        "sagemaker",
        "--job-name",
        "receipts-full",
        "--dataset",
        snapshot,
        "--dynamo-table",
        table,
        "--output-s3-uri",
        "s3://runs/layoutlm",
        "--image-uri",
        IMAGE,
        "--role-arn",
        ROLE,
        *TRAIN_FLAGS,
        *extra,
    ]


def test_submit_starts_a_spot_training_job(stubbed, fresh_table, bucket, snapshot, aws_env, monkeypatch):
    monkeypatch.delenv("LAYOUTLM_JOB_STORE", raising=False)
    expected = {
        "TrainingJobName": ANY,
        "HyperParameters": ANY,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": "s3://runs/layoutlm/receipts-full/sagemaker/input/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://runs/layoutlm/receipts-full/sagemaker/output/"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 80},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {
            "S3Uri": "s3://runs/layoutlm/receipts-full/sagemaker/checkpoints/",
            "LocalPath": "/opt/ml/checkpoints",
        },
        "Tags": ANY,
    }
    stubbed.add_response("create_training_job", {"TrainingJobArn": ARN.format("x")}, expected)
    result = run_cli(
        *submit_flags(fresh_table, snapshot, "--spot", "--max-run", 3600, "--max-wait", 7200, "--volume-gb", 80)
    )
    assert result.exit_code == 0, result.output
    job_id = result.output.strip().splitlines()[-1]

    (request,) = stubbed.sent
    store = open_store(f"dynamodb://{fresh_table}", aws_env)
    job = store.get_job(job_id)
    assert job.status == "pending" and not job.is_stale()
    assert job.tags == {
        "backend": "sagemaker",
        "sagemaker_training_job": request["TrainingJobName"],
        "sagemaker_region": "us-east-1",
        "sagemaker_arn": ARN.format("x"),
    }
    assert request["TrainingJobName"] == f"receipts-full-{job_id[:8]}"
    assert {"Key": "layoutlm:job-id", "Value": job_id} in request["Tags"]
    assert job.storage["run_root_prefix"] == "layoutlm/receipts-full/"
    assert job.job_config["output_dir"] == "/opt/ml/checkpoints" and job.job_config["dataset"] == str(snapshot)

    # The hyperparameters are what the container reads: all strings, the job, its store, the config.
    params = request["HyperParameters"]
    assert all(isinstance(v, str) and len(v) <= 2500 for v in params.values())
    config = json.loads(params["train_config"])
    assert params["job_id"] == job_id and params["job_store"] == f"dynamodb://{fresh_table}"
    assert params["region"] == "us-east-1" and params["dataset_channel"] == "train"
    assert config["dataset"] == "receipts.jsonl" and config["allowed_labels"] == ["DATE"] and config["epochs"] == 2
    # The dataset snapshot is in the channel's prefix.
    s3 = boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1")
    body = s3.get_object(Bucket="runs", Key="layoutlm/receipts-full/sagemaker/input/receipts.jsonl")["Body"].read()
    assert body == snapshot.read_bytes()


@pytest.mark.parametrize(
    ("code", "message", "says"),
    [
        ("AccessDeniedException", "not authorized to perform: sagemaker:CreateTrainingJob", "AWS refused access"),
        ("ValidationException", f"Could not assume role {ROLE}", "Could not assume role"),
        ("ResourceLimitExceeded", "The account-level service limit 'ml.g5.xlarge for spot'", "quota"),
    ],
)
def test_a_refused_create_training_job_fails_the_job(
    stubbed, fresh_table, bucket, snapshot, aws_env, code, message, says
):
    stubbed.add_client_error("create_training_job", code, message, http_status_code=400)
    result = run_cli(*submit_flags(fresh_table, snapshot, "--job-store", f"dynamodb://{fresh_table}"))
    one_sentence_error(result, says, "is marked failed")
    (job,) = open_store(f"dynamodb://{fresh_table}", aws_env).list_jobs()
    assert job.status == "failed"
    history = open_store(f"dynamodb://{fresh_table}", aws_env).status_history(job.job_id)
    assert says in history[-1]["message"]


def test_refused_flags_write_nothing(stubbed, fresh_table, bucket, snapshot, aws_env, tmp_path):
    store = open_store(f"dynamodb://{fresh_table}", aws_env)
    one_sentence_error(run_cli(*submit_flags(fresh_table, snapshot, "--spot")), "--max-wait")
    one_sentence_error(run_cli(*submit_flags(fresh_table, snapshot, "--instance-count", 2)), "--instance-count 1")
    sqlite = run_cli(*submit_flags(fresh_table, snapshot, "--job-store", f"sqlite:///{tmp_path / 'j.db'}"))
    one_sentence_error(sqlite, "cannot reach the job store")
    one_sentence_error(
        run_cli("submit", "--job-name", "q", "--dataset", "demo:20", "--spot"), "add --backend sagemaker"
    )
    assert store.list_jobs() == [] and stubbed.sent == []


def sagemaker_job(tmp_path, status="pending"):
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = store.create_job("remote", {"dataset": "demo:40", "job_name": "remote"})
    name = sm.link_training_job(store, job, AwsSettings(region="eu-west-1"))
    if status == "running":
        store.transition(job, "running", {"status": "pending"}, attempts=1, heartbeat_at=job.created_at)
        store.heartbeat(job)
    return store, job, name


def described(name, status, secondary, **extra):
    return {
        "TrainingJobName": name,
        "TrainingJobArn": ARN.format(name),
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://runs/layoutlm/remote/sagemaker/output/{name}/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    }


def test_jobs_show_remote(stubbed, tmp_path):
    store, job, name = sagemaker_job(tmp_path, "running")
    stubbed.add_response(
        "describe_training_job",
        described(name, "Completed", "Completed", TrainingTimeInSeconds=1000, BillableTimeInSeconds=300),
        {"TrainingJobName": name},
    )
    result = run_cli("jobs", "show", "remote", "--remote", "--job-store", store.description)
    assert result.exit_code == 0, result.output
    assert f"SageMaker {name}: Completed (Completed), billable 300 s of 1000 s, spot savings 70%" in result.output

    stubbed.add_response("describe_training_job", described(name, "InProgress", "Training"), {"TrainingJobName": name})
    result = run_cli("jobs", "show", "remote", "--remote", "--json", "--job-store", store.description)
    assert json.loads(result.output)["sagemaker"]["secondary_status"] == "Training"


def test_a_training_job_that_died_unrecorded_is_recorded_by_show_remote(stubbed, tmp_path):
    """The container never wrote the table (e.g. its role lacks DynamoDB rights): SageMaker says Failed."""
    store, job, name = sagemaker_job(tmp_path)
    reason = "AlgorithmError: AccessDeniedException on dynamodb:GetItem"
    stubbed.add_response(
        "describe_training_job", described(name, "Failed", "Failed", FailureReason=reason), {"TrainingJobName": name}
    )
    result = run_cli("jobs", "show", "remote", "--remote", "--job-store", store.description)
    assert result.exit_code == 0 and "status failed" in result.output, result.output
    assert reason in store.status_history(job.job_id)[-1]["message"]


def test_jobs_cancel_stops_the_training_job(stubbed, tmp_path):
    store, job, name = sagemaker_job(tmp_path, "running")
    stubbed.add_response("stop_training_job", {}, {"TrainingJobName": name})
    result = run_cli("jobs", "cancel", "remote", "--job-store", store.description)
    assert result.exit_code == 0, result.output
    assert "cancel requested" in result.output and f"SageMaker training job {name} is stopping" in result.output
    assert store.get_job(job.job_id).cancel_requested  # the container ends it `cancelled` (test_sagemaker_container)

    store2, job2, name2 = sagemaker_job(tmp_path / "b")
    stubbed.add_client_error(
        "stop_training_job",
        "ValidationException",
        "The request was rejected because the training job is in status Failed.",
    )
    result = run_cli("jobs", "cancel", "remote", "--job-store", store2.description)
    assert result.exit_code == 0 and "had already ended" in result.output, result.output
    assert store2.get_job(job2.job_id).status == "cancelled"


def test_stop_refused_says_the_cancel_is_recorded(stubbed, tmp_path):
    store, job, name = sagemaker_job(tmp_path, "running")
    stubbed.add_client_error("stop_training_job", "AccessDeniedException", "not authorized", http_status_code=400)
    result = run_cli("jobs", "cancel", "remote", "--job-store", store.description)
    one_sentence_error(result, "AWS refused access", "the cancel is recorded")


def test_the_stubber_refuses_what_aws_would(stubbed, tmp_path):
    """The check the tests above rely on: a request off the API model fails before any answer."""
    store, job, name = sagemaker_job(tmp_path)
    client = sm.sagemaker_client(None)
    stubbed.add_response("stop_training_job", {})  # any parameters: only the API model judges them
    with pytest.raises(ParamValidationError):
        client.stop_training_job(TrainingJobName=name, Force=True)
    with pytest.raises(ParamValidationError):
        client.stop_training_job(TrainingJobName=17)
    client.stop_training_job(TrainingJobName=name)
    with pytest.raises(UserError, match="did not run on SageMaker"):
        sm.describe(store.create_job("local", {}), AwsSettings())


def test_launch_training_job_ends_a_job_it_cannot_start_failed(stubbed, tmp_path):
    """The sweep's entry point: a pending Job it cannot launch (here: a sqlite store the container cannot
    reach) does not stay pending forever."""
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = store.create_job("trial-1", {"job_name": "trial-1", "dataset": "demo:40", "output_s3_uri": "s3://runs/x"})
    with pytest.raises(UserError, match="cannot reach the job store"):
        sm.launch_training_job(store, job, sm.SageMakerSettings(IMAGE, ROLE), AwsSettings())
    job = store.get_job(job.job_id)
    assert job.status == "failed" and job.tags["backend"] == "sagemaker" and stubbed.sent == []
