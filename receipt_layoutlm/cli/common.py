"""What the command modules share: consoles, and the job-store and AWS options.

The consoles print text literally (markup=False): user text such as `boxes are [1, 2]`
or `data/[x]/f.jsonl` must reach the terminal unchanged; style goes through `style=`.
"""

from __future__ import annotations

import functools
import inspect
import sys

import click
from rich.console import Console

# Pipes and CI logs get a wide, unwrapped table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160, markup=False)
err_console = Console(stderr=True, markup=False)


def aws_options(f):
    """--region/--endpoint-url, resolved once (receipt_layoutlm/aws.py) and handed to the command as `aws`."""

    @functools.wraps(f)
    def wrapper(*args, region, endpoint_url, **kwargs):
        from ..aws import AwsSettings

        return f(*args, aws=AwsSettings.resolve(region, endpoint_url), **kwargs)

    wrapper = click.option(
        "--endpoint-url",
        help="DynamoDB endpoint, e.g. DynamoDB Local (default: $DYNAMODB_ENDPOINT_URL, else AWS's own).",
    )(wrapper)
    return click.option(
        "--region",
        help="AWS region (default: $AWS_REGION, else $AWS_DEFAULT_REGION, else the AWS profile's, else us-east-1).",
    )(wrapper)


job_store_option = click.option(
    "--job-store",
    help="sqlite:///PATH or dynamodb://TABLE (default: $LAYOUTLM_JOB_STORE, else dynamodb://<--dynamo-table>, "
    "else jobs.db in the user data dir).",
)


def dynamo_table_option(required: bool = False, help: str = "The receipts table (default: $DYNAMO_TABLE_NAME)."):
    return click.option("--dynamo-table", envvar="DYNAMO_TABLE_NAME", required=required, help=help)


def with_store(f):
    """--job-store/--dynamo-table/--region/--endpoint-url, handed to the command as one `store` (and as
    `aws` too when the command takes it)."""
    wants_aws = "aws" in inspect.signature(f).parameters

    @functools.wraps(f)
    def wrapper(*args, job_store, dynamo_table, aws, **kwargs):
        from ..store import open_store, resolve_store_uri

        if wants_aws:
            kwargs["aws"] = aws
        return f(*args, store=open_store(resolve_store_uri(job_store, dynamo_table), aws), **kwargs)

    dynamo_help = "The receipts table, whose jobs to show unless --job-store says otherwise."
    return job_store_option(dynamo_table_option(help=dynamo_help)(aws_options(wrapper)))


def with_store_opener(f):
    """--job-store/--region/--endpoint-url, handed to the command as `open_store`, a function that opens
    the store when first needed (a model given as a folder needs none), and `aws`."""

    @functools.wraps(f)
    def wrapper(*args, job_store, aws, **kwargs):
        from ..store import open_store, resolve_store_uri

        return f(*args, open_store=lambda: open_store(resolve_store_uri(job_store, None), aws), aws=aws, **kwargs)

    return job_store_option(aws_options(wrapper))
