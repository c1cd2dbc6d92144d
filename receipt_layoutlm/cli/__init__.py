"""`layoutlm-cli`: train, inspect jobs, look at datasets, predict, export.

Every problem the user can fix arrives here as a UserError and is printed as one
sentence with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys

import click

from ..errors import UserError
from . import aws, dataset, export, jobs, label, predict, train
from .common import err_console


class Cli(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=Cli)
@click.version_option(package_name="receipt-layoutlm")
def cli():
    """Train, track and use LayoutLM models that find the fields of receipts."""


cli.add_command(train.train)
cli.add_command(jobs.jobs)
cli.add_command(dataset.dataset)
cli.add_command(predict.predict)
cli.add_command(export.export)
aws.register(cli)  # dynamo create-table, dataset import/export
label.register(cli)  # propose, dataset suggest


def main():
    cli(prog_name="layoutlm-cli")


if __name__ == "__main__":
    main()
