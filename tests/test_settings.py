"""Settings travel as arguments: AWS region/endpoints, the job store URI, and the train flags made from TrainConfig."""

from __future__ import annotations

import dataclasses
import os

import click
import pytest
from click.testing import CliRunner

from receipt_layoutlm.aws import AwsSettings, resolve_region
from receipt_layoutlm.cli import cli
from receipt_layoutlm.cli.options import train_config, train_options
from receipt_layoutlm.cli.train import train
from receipt_layoutlm.store import default_store_uri, open_store, resolve_store_uri
from receipt_layoutlm.training.config import TrainConfig

AWS_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION", "DYNAMODB_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def no_aws_env(monkeypatch, tmp_path):
    """No region or endpoint in the environment, and no AWS config files."""
    for name in (*AWS_VARS, "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "LAYOUTLM_JOB_STORE", "DYNAMO_TABLE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return tmp_path


# --- AWS settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "list"],
        ["dataset", "stats", "--dataset", "demo:4"],
        ["train", "--job-name", "refused", "--dataset", "demo:4", "--epochs", "0"],  # refused before any job
    ],
)
def test_cli_leaves_the_environment_alone(no_aws_env, monkeypatch, args):
    monkeypatch.setenv("LAYOUTLM_JOB_STORE", f"sqlite:///{no_aws_env / 'jobs.db'}")
    before = {name: os.environ.get(name) for name in AWS_VARS}
    CliRunner().invoke(cli, [*args, "--region", "eu-north-1", "--endpoint-url", "http://127.0.0.1:9"])
    assert {name: os.environ.get(name) for name in AWS_VARS} == before == dict.fromkeys(AWS_VARS)


def test_region_resolution_order(no_aws_env, monkeypatch):
    assert resolve_region(None, {}) == "us-east-1"
    (no_aws_env / "no-aws-config").write_text("[default]\nregion = ap-south-1\n")
    assert resolve_region(None, {}) == "ap-south-1"  # the profile's region
    assert resolve_region(None, {"AWS_DEFAULT_REGION": "eu-west-3"}) == "eu-west-3"
    assert resolve_region(None, {"AWS_DEFAULT_REGION": "eu-west-3", "AWS_REGION": "eu-west-1"}) == "eu-west-1"
    assert resolve_region("sa-east-1", {"AWS_REGION": "eu-west-1"}) == "sa-east-1"
    settings = AwsSettings.resolve(
        None, None, {"AWS_REGION": "eu-west-1", "DYNAMODB_ENDPOINT_URL": "http://d", "AWS_ENDPOINT_URL_S3": "http://s"}
    )
    assert settings == AwsSettings("eu-west-1", "http://d", "http://s")
    assert AwsSettings.resolve("x-1", "http://flag", {"DYNAMODB_ENDPOINT_URL": "http://d"}).dynamodb_endpoint == (
        "http://flag"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "list", "--dynamo-table", "no-such-table"],
        [
            "train",
            "--job-name",
            "r",
            "--dynamo-table",
            "no-such-table",
            "--pretrained",
            "tiny",
            "--output-dir",
            "{tmp}",
        ],
    ],
)
def test_train_and_jobs_honour_aws_default_region(aws_env, monkeypatch, tmp_path, args):
    """DynamoDB Local ignores the region, so the region the command used shows in the message."""
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    for name in ("LAYOUTLM_JOB_STORE", "DYNAMO_TABLE_NAME", "LAYOUTLM_TRAINING_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path / "out") for a in args])
    assert result.exit_code == 2, result.output
    assert "DynamoDB table no-such-table not found in region eu-west-3" in result.output


# --- the job store URI ----------------------------------------------------------------------


def test_one_rule_picks_the_job_store(no_aws_env, monkeypatch):
    assert resolve_store_uri(None, None) == default_store_uri()
    assert resolve_store_uri(None, "Receipts") == "dynamodb://Receipts"
    monkeypatch.setenv("LAYOUTLM_JOB_STORE", "sqlite:///env.db")
    assert resolve_store_uri(None, "Receipts") == "sqlite:///env.db"
    assert resolve_store_uri("dynamodb://Flag", "Receipts") == "dynamodb://Flag"


def test_jobs_commands_use_the_same_rule(no_aws_env, monkeypatch):
    env_db, flag_db = no_aws_env / "env.db", no_aws_env / "flag.db"
    open_store(f"sqlite:///{env_db}").create_job("from-env", {})
    open_store(f"sqlite:///{flag_db}").create_job("from-flag", {})
    monkeypatch.setenv("LAYOUTLM_JOB_STORE", f"sqlite:///{env_db}")
    listed = CliRunner().invoke(cli, ["jobs", "list", "--dynamo-table", "ignored-since-env-is-set"])
    assert listed.exit_code == 0, listed.output
    assert "from-env" in listed.output
    listed = CliRunner().invoke(cli, ["jobs", "list", "--job-store", f"sqlite:///{flag_db}"])
    assert listed.exit_code == 0, listed.output
    assert "from-flag" in listed.output and "from-env" not in listed.output


# --- train flags from TrainConfig ------------------------------------------------------------


def test_every_setting_has_help_and_a_flag():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
    flags = {o for p in train.params for o in p.opts}
    assert "--allowed-label" in flags and "--label-status" in flags and "--job-name" in flags


def test_train_defaults_are_the_dataclass_defaults(no_aws_env):
    ctx = train.make_context("train", ["--job-name", "x"])
    assert train_config(ctx.params) == TrainConfig(job_name="x")
    ctx = train.make_context(
        "train", ["--job-name", "x", "--allowed-label", "DATE", "--allowed-label", "TIME", "--merge-amounts"]
    )
    cfg = train_config(ctx.params)
    assert (cfg.allowed_labels, cfg.merge_amounts) == (["DATE", "TIME"], True)


def test_help_shows_defaults_help_and_choices(no_aws_env):
    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--lr FLOAT Peak learning rate (AdamW). [default: 5e-05]" in text
    assert "--precision [auto|fp32|fp16|bf16]" in text
    assert "--priority [low|medium|high|critical]" in text
    assert "--label-status TEXT Validation status of DynamoDB labels to train on (repeatable). [default: VALID]" in text


def test_choices_are_checked_for_configs_made_in_code():
    from receipt_layoutlm.errors import UserError
    from receipt_layoutlm.training.config import check_config

    with pytest.raises(UserError, match="--example-unit must be one of receipt, line, got 'page'"):
        check_config(TrainConfig(job_name="x", dataset="demo:4", example_unit="page"))


def test_train_options_subset_for_other_commands():
    @click.command()
    @train_options(only=("seed", "val_ratio"))
    def command(**settings):
        click.echo(repr(train_config(settings, job_name="x")))

    result = CliRunner().invoke(command, ["--seed", "7"])
    assert result.exit_code == 0, result.output
    assert "seed=7" in result.output and "val_ratio=0.1" in result.output
    assert {p.name for p in command.params} == {"seed", "val_ratio"}
    with pytest.raises(ValueError, match="not TrainConfig fields"):
        train_options(exclude=("no_such_field",))


def test_default_pretrained_matches_the_model_module():
    from receipt_layoutlm import model
    from receipt_layoutlm.training import config

    assert config.DEFAULT_PRETRAINED == model.DEFAULT_PRETRAINED
