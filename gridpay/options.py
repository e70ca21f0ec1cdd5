"""What every command group shares: the ``--config`` and ``--url`` options, and
``open_database``: open the configured database, run the command's body, report a refusal, close."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, NoReturn

import click

from config import Settings, load_settings

config_option = click.option("--config", "config_path", envvar="GRIDPAY_CONFIG", type=click.Path(dir_okay=False),
                             help="configuration file (default: GRIDPAY_CONFIG, else built-in defaults)")
url_option = click.option("--url", help="database URL (default: the configuration's database.url)")

NO_SCHEMA = "the database has no schema yet: run `gridpay db upgrade` first"


def database_url(config_path: str | None, url: str | None) -> str:
    return url or load_settings(config_path).database_url()


def refuse(reason: object) -> NoReturn:
    """What the ledger refused, on standard error; exit status 1."""
    click.echo(f"refused: {reason}", err=True)
    sys.exit(1)


def business_clock(settings: Settings):
    from config.clock import Clock

    return Clock.of(settings.business)


def require_schema(url: str) -> None:
    from ledger import migrate

    if migrate.current(url) is None:
        raise click.ClickException(NO_SCHEMA)


@contextmanager
def open_database(config_path: str | None, url: str | None = None, *, refusals: type | tuple = (),
                  pool_size: int | None = None, needs_schema: bool = False,
                  replica: bool = False) -> Iterator[tuple[Settings, object]]:
    """(settings, engine) for the body; an exception of ``refusals`` is reported with ``refuse``; the
    engine is disposed of after. ``replica``: a body that only reads, and tolerates a replica's lag,
    reads from ``database.replica_url`` where there is one (``--url`` still wins)."""
    from ledger.db import make_engine

    settings = load_settings(config_path)
    url = url or (replica and settings.replica_url()) or settings.database_url()
    if needs_schema:
        require_schema(url)
    engine = make_engine(url, pool_size=pool_size) if pool_size else make_engine(url)
    try:
        yield settings, engine
    except refusals as exc:
        refuse(exc)
    finally:
        engine.dispose()
