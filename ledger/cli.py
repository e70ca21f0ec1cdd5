"""``gridpay db``, ``gridpay ledger`` and ``gridpay report``."""
from __future__ import annotations

import click

from config import load_settings

config_option = click.option("--config", "config_path", envvar="GRIDPAY_CONFIG", type=click.Path(dir_okay=False),
                             help="configuration file (default: GRIDPAY_CONFIG, else built-in defaults)")
url_option = click.option("--url", help="database URL (default: the configuration's database.url)")


def database_url(config_path: str | None, url: str | None) -> str:
    return url or load_settings(config_path).database_url()


@click.group()
def db() -> None:
    """Create, migrate and inspect the database."""


@db.command()
@config_option
@url_option
@click.option("--revision", default="head", show_default=True, help="migrate to this revision")
def upgrade(config_path, url, revision) -> None:
    """Create the database or migrate it to the newest schema (SQLite, PostgreSQL, Oracle)."""
    from ledger import migrate

    target = database_url(config_path, url)
    migrate.upgrade(target, revision)
    click.echo(f"database at revision {migrate.current(target)}")


@db.command()
@config_option
@url_option
def current(config_path, url) -> None:
    """Print the schema revision the database is at."""
    from ledger import migrate

    click.echo(migrate.current(database_url(config_path, url)) or "(empty: run gridpay db upgrade)")


@db.command()
@click.option("--dialect", type=click.Choice(["oracle", "postgresql", "sqlite"]), default="oracle", show_default=True)
def sql(dialect) -> None:
    """Print the migration as SQL for a DBA to review (offline: no database is touched)."""
    from alembic import command

    from ledger.migrate import alembic_config

    urls = {"oracle": "oracle+oracledb://", "postgresql": "postgresql+psycopg://", "sqlite": "sqlite://"}
    command.upgrade(alembic_config(urls[dialect]), "head", sql=True)
