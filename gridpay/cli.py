"""The one console command, ``gridpay``, and its subcommands.

Each area of the product owns its subcommands (``gridpay.iso_commands``, ``gridpay.ledger_commands``, ...);
this module only names them, and imports an area when its command is used, so that
``gridpay --help`` stays fast.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from config import ConfigError
from runtime.logging_setup import mask_last_resort

# name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "api": "gridpay.api_command:api",
    "collection-rate": "gridpay.collection_rate_command:collection_rate",
    "db": "gridpay.ledger_commands:db",
    "demo": "gridpay.demo_command:demo",
    "ops-kit": "gridpay.opskit_command:ops_kit",
    "ledger": "gridpay.ledger_commands:ledger",
    "report": "gridpay.ledger_commands:report",
    "iso": "gridpay.iso_commands:iso",
    "serve": "gridpay.serve_command:serve",
    "sim": "gridpay.sim_commands:sim",
    "recon": "gridpay.recon_commands:recon",
    "watch": "gridpay.recon_commands:watch",
    "plan": "gridpay.debit_commands:plan",
    "scheduler": "gridpay.debit_commands:scheduler",
    "engine": "gridpay.debit_commands:engine",
    "debit": "gridpay.debit_commands:debit",
    "notifier": "gridpay.notifier_commands:notifier",
    "status": "gridpay.status_command:status",
    "principal": "gridpay.principal_commands:principal",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when one is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SUBCOMMANDS:
            module_name, attr = SUBCOMMANDS[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gridpay")
@click.pass_context
def gridpay(ctx: click.Context) -> None:
    """gridpay: the utility's bank payment gateway (ISO 8583 counter and debit channels,
    receivables ledger, reconciliation)."""
    # PostgreSQL's pg_stat_activity names each connection's process ("gridpay serve", "gridpay
    # engine", ...; their worker processes inherit it): libpq reads PGAPPNAME. A site's own wins.
    if ctx.invoked_subcommand:
        os.environ.setdefault("PGAPPNAME", f"gridpay {ctx.invoked_subcommand}")


def main(argv: list[str] | None = None) -> None:
    mask_last_resort()  # what a command that sets up no logging prints is masked too
    try:
        gridpay.main(args=argv, prog_name="gridpay", standalone_mode=True)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
