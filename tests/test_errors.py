"""Failures a user can fix reach the terminal as one literal sentence, never a traceback."""

from __future__ import annotations

import http.server
import sqlite3
import threading

import click
import pytest
from click.testing import CliRunner

from receipt_layoutlm.aws import AwsSettings
from receipt_layoutlm.cli import Cli, cli
from receipt_layoutlm.errors import UserError
from receipt_layoutlm.s3 import S3Sync
from receipt_layoutlm.store import open_store
from receipt_layoutlm.store import sqlite as sqlite_backend
from receipt_layoutlm.store.dynamodb import DynamoTable


def one_sentence_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Fake credentials (so requests are signed and sent) and no job store or table from the environment."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "LAYOUTLM_JOB_STORE", "DYNAMO_TABLE_NAME", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return tmp_path


# --- text is printed literally ---------------------------------------------------------------


def test_user_error_text_reaches_stderr_verbatim():
    message = "boxes are [1, 2] and [bold]x[/bold]; see data/[x]/missing.jsonl"

    @click.group(cls=Cli)
    def group():
        pass

    @group.command()
    def fail():
        raise UserError(message)

    result = CliRunner().invoke(group, ["fail"])
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


def test_paths_with_brackets_are_kept(isolated):
    result = CliRunner().invoke(cli, ["dataset", "stats", "--dataset", "data/[x]/missing.jsonl"])
    one_sentence_error(result, "Dataset file data/[x]/missing.jsonl does not exist")


def test_job_names_with_brackets_are_listed_literally(isolated):
    store_uri = f"sqlite:///{isolated / 'jobs.db'}"
    open_store(store_uri).create_job("run-[v2]", {})
    result = CliRunner().invoke(cli, ["jobs", "list", "--job-store", store_uri])
    assert result.exit_code == 0, result.output
    assert "run-[v2]" in result.output
    result = CliRunner().invoke(cli, ["jobs", "show", "run-[v2]", "--job-store", store_uri])
    assert result.exit_code == 0, result.output
    assert "run-[v2]  " in result.output


# --- a job store that cannot be written ----------------------------------------------------------


def test_read_only_job_store(isolated, monkeypatch):
    """As a non-root user a chmod 444 jobs.db opens read-only; the tests run as root, where chmod stops
    nothing, so the connection is opened read-only the same way SQLite falls back to it."""
    path = isolated / "jobs.db"
    open_store(f"sqlite:///{path}").create_job("earlier", {})
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite_backend.sqlite3, "connect", lambda p, **kw: connect(f"file:{p}?mode=ro", uri=True, **kw))
    result = CliRunner().invoke(
        cli,
        ["train", "--job-name", "ro", "--dataset", "demo:4", "--pretrained", "tiny", "--output-dir", isolated / "ro"],
        env={"LAYOUTLM_JOB_STORE": f"sqlite:///{path}"},
    )
    one_sentence_error(result, f"The job store {path} is read-only", "--job-store sqlite:///PATH")
    monkeypatch.undo()
    assert [j.name for j in open_store(f"sqlite:///{path}").list_jobs()] == ["earlier"]


def test_job_store_under_a_regular_file(isolated):
    blocker = isolated / "somefile"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, ["jobs", "list", "--job-store", f"sqlite:///{blocker / 'jobs.db'}"])
    one_sentence_error(result, f"Cannot open the job store {blocker / 'jobs.db'}", "--job-store sqlite:///PATH")


# --- an endpoint that answers HTTP but is not the AWS service ------------------------------------


@pytest.fixture
def not_aws():
    """A web server on 127.0.0.1 that answers every request with HTTP 501 (http.server's default)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def test_dynamodb_endpoint_that_is_not_dynamodb(isolated, not_aws):
    with pytest.raises(UserError, match=f"The endpoint {not_aws} answered HTTP 501 but is not DynamoDB"):
        DynamoTable("Receipts", AwsSettings(dynamodb_endpoint=not_aws)).get("a", "b")
    result = CliRunner().invoke(cli, ["jobs", "list", "--dynamo-table", "Receipts", "--endpoint-url", not_aws])
    one_sentence_error(result, f"The endpoint {not_aws} answered HTTP 501 but is not DynamoDB", "--endpoint-url")


def test_s3_endpoint_that_is_not_s3(isolated, not_aws):
    with pytest.raises(UserError, match=f"The endpoint {not_aws} answered HTTP 501 but is not S3.*AWS_ENDPOINT_URL_S3"):
        S3Sync("s3://bucket/runs", "job", AwsSettings(s3_endpoint=not_aws)).check()
