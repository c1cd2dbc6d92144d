"""What the command modules share: consoles, the store and AWS options."""

from __future__ import annotations

import functools
import os
import sys

import click
from rich.console import Console

# Pipes and CI logs get a wide, unwrapped table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def _aws_options(f):
    """--region/--endpoint-url, handed to boto3 through the variables it already reads."""
    f = click.option("--endpoint-url", envvar="DYNAMODB_ENDPOINT_URL", help="DynamoDB endpoint (local servers).")(f)
    f = click.option("--region", envvar="AWS_REGION", default="us-east-1", show_default=True, help="AWS region.")(f)
    return f


def _export_aws(region: str | None, endpoint_url: str | None) -> None:
    if region:
        os.environ["AWS_REGION"] = region
    if endpoint_url:
        os.environ["DYNAMODB_ENDPOINT_URL"] = endpoint_url


def _store_uri(job_store: str | None, dynamo_table: str | None) -> str | None:
    """--job-store wins; else the seed's habit: --dynamo-table means jobs live in that table."""
    if job_store:
        return job_store
    return f"dynamodb://{dynamo_table}" if dynamo_table else None


job_store_option = click.option(
    "--job-store",
    envvar="LAYOUTLM_JOB_STORE",
    help="sqlite:///PATH (default: a file in the user data dir) or dynamodb://TABLE.",
)
dynamo_table_option = click.option(
    "--dynamo-table",
    envvar="DYNAMO_TABLE_NAME",
    help="The receipts table (data and, unless --job-store says otherwise, jobs).",
)


def with_store(f):
    """--job-store/--dynamo-table/--region/--endpoint-url, handed to the command as one `store`."""

    @functools.wraps(f)
    def wrapper(*args, job_store, dynamo_table, region, endpoint_url, **kwargs):
        from ..store import open_store

        _export_aws(region, endpoint_url)
        return f(*args, store=open_store(_store_uri(job_store, dynamo_table)), **kwargs)

    return job_store_option(dynamo_table_option(_aws_options(wrapper)))
