"""`layoutlm-cli`: train, queue and run jobs, inspect them, look at datasets, predict, evaluate, export, propose.

Every problem the user can fix arrives here as a UserError and is printed as one
sentence with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys

import click
from rich.text import Text

from ..errors import UserError
from . import aws, dataset, evaluate, export, fleet, jobs, label, predict, sagemaker, sweep, train
from .common import err_console


class Cli(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            err_console.print(Text.assemble(("error:", "bold red"), f" {e}"), highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=Cli)
@click.version_option(package_name="receipt-layoutlm")
def cli():
    """Train, track and use LayoutLM models that find the fields of receipts."""


cli.add_command(train.train)
cli.add_command(jobs.jobs)
cli.add_command(dataset.dataset)
cli.add_command(predict.predict)
cli.add_command(evaluate.evaluate)
cli.add_command(fleet.submit)
cli.add_command(fleet.worker)
cli.add_command(fleet.resume)
cli.add_command(export.export)
cli.add_command(sagemaker.sagemaker_entrypoint)
cli.add_command(sweep.sweep)
aws.register(cli)  # dynamo create-table, dataset import/export
label.register(cli)  # propose, dataset suggest


def main():
    cli(prog_name="layoutlm-cli")


if __name__ == "__main__":
    main()
