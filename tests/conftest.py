"""Shared fixtures and helpers: the ../shared folder, local AWS servers (DynamoDB Local, moto S3),
and running the CLI in-process. Test modules import the helpers: `from conftest import run_cli`."""

from __future__ import annotations

import uuid
from pathlib import Path

import aws_servers
import boto3
import pytest
from click.testing import CliRunner

from receipt_layoutlm.aws import AwsSettings

AWS_FIXTURES = {"dynamodb_local", "s3_server", "aws_env", "fresh_table", "raw"}


def run_cli(*args, **kwargs):
    """`layoutlm-cli ARGS` in this process; exceptions other than handled user errors propagate."""
    from receipt_layoutlm.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


def one_sentence_error(result, *fragments):
    """A refused command: exit code 2, an `error:` sentence holding each fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error:" in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def pytest_collection_modifyitems(items):
    """Every test that uses a local AWS server is marked `aws` (select with -m aws / -m "not aws")."""
    for item in items:
        if AWS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.aws)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = Path(__file__).resolve().parents[2] / "shared"
    if not path.is_dir():
        pytest.skip(f"{path} not found (the shared datasets and specs live beside the repository)")
    return path


@pytest.fixture(scope="session")
def dynamodb_local():
    """Endpoint URL of a DynamoDB Local started for this test session (in memory)."""
    try:
        proc, url = aws_servers.start_dynamodb_local()
    except RuntimeError as e:
        pytest.fail(f"cannot start DynamoDB Local: {e}", pytrace=False)
    yield url
    aws_servers.stop(proc)


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of a moto S3 server in a thread of this process."""
    from moto.server import ThreadedMotoServer

    port = aws_servers.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path, dynamodb_local, s3_server) -> AwsSettings:
    """Fake credentials and the local endpoints, so no test can reach real AWS; returns the AwsSettings
    that point at the local servers."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    # The CLI reads these at its boundary; library calls in tests get the returned settings.
    monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", dynamodb_local)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    return AwsSettings(region="us-east-1", dynamodb_endpoint=dynamodb_local, s3_endpoint=s3_server)


@pytest.fixture
def raw(aws_env: AwsSettings):
    """A plain boto3 DynamoDB client, as the users' own scripts use."""
    return boto3.client("dynamodb", endpoint_url=aws_env.dynamodb_endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def wildreceipt_file(shared_dir) -> Path:
    """The real WildReceipt receipts (MMOCR KIE format) beside the repository."""
    path = shared_dir / "datasets" / "wildreceipt" / "receipts.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture
def fresh_table(aws_env: AwsSettings) -> str:
    """A new, empty receipts table (created as `layoutlm-cli dynamo create-table` does); yields its name."""
    from receipt_layoutlm.store.dynamodb import create_table

    name = f"test-{uuid.uuid4().hex[:12]}"
    create_table(name, aws_env)
    return name


@pytest.fixture(scope="session")
def tiny_best(tmp_path_factory) -> Path:
    """best/ of a tiny model trained (3 epochs, demo:40, short windows) so its logits are not ties."""
    from click.testing import CliRunner

    from receipt_layoutlm.cli import cli

    out = tmp_path_factory.mktemp("tiny-model")
    args = ["train", "--job-name", "tiny", "--dataset", "demo:40", "--pretrained", "tiny", "--epochs", "3"]
    args += ["--lr", "1e-3", "--max-seq-length", "64", "--window-overlap", "16", "--output-dir", str(out / "run")]
    args += ["--job-store", f"sqlite:///{out / 'jobs.db'}"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "run" / "best"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A tmp dir whose jobs.db is the job store of every command; no table or bucket from the environment.
    Test files with other needs (AWS, a model cache) define their own `env`."""
    monkeypatch.setenv("LAYOUTLM_JOB_STORE", f"sqlite:///{tmp_path / 'jobs.db'}")
    for var in ("DYNAMO_TABLE_NAME", "LAYOUTLM_TRAINING_BUCKET"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path
