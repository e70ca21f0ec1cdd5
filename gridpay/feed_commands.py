"""``gridpay ledger feed``: the billing system's payment feed, for operators (docs/billing-feed.md).

- ``show``: a page of the feed after a seq (what billing's reader gets), as the daily file's D lines
  or JSON;
- ``export``: a business day's file to ``DROP/outgoing/`` (audited as ``feed.export``).
"""
from __future__ import annotations

import json
from datetime import timedelta

import click

from gridpay.operator_auth import operator_actor
from gridpay.options import business_clock, config_option, open_database, url_option


@click.group()
def feed() -> None:
    """The billing system's payment feed: every change that matters to billing, numbered."""


@feed.command()
@click.option("--after", type=int, default=0, show_default=True, help="show the rows after this seq")
@click.option("--limit", type=int, default=100, show_default=True, help="at most this many rows")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per row")
@config_option
@url_option
def show(after, limit, as_json, config_path, url) -> None:
    """Rows of the feed after seq AFTER, in order; last, the seq to ask after next."""
    from ledger.billing_feed import read_feed
    from ledger.billing_feed.daily_file import d_line
    from ledger.db import read_only
    from ledger.errors import Refused

    with open_database(config_path, url, refusals=Refused, needs_schema=True) as (_, engine):
        with read_only(engine.connect()) as conn:
            rows, next_after = read_feed(conn, after, limit)
    for row in rows:
        click.echo(json.dumps(row, default=str, sort_keys=True) if as_json else d_line(row))
    click.echo(f"next after: {next_after}", err=True)


# the feed is a file exchanged with the billing system, which operations runs (docs/access.md)
FEED_EXPORT = "billing.import"


@feed.command()
@click.argument("business_date", type=click.DateTime(formats=["%Y-%m-%d"]), required=False)
@click.option("--dir", "drop_dir", type=click.Path(file_okay=False),
              help="the drop directory (default: the configuration's drop_dir); the file goes to its outgoing/")
@config_option
@url_option
def export(business_date, drop_dir, config_path, url) -> None:
    """Write BUSINESS_DATE's feed file (YYYY-MM-DD; default: the business date before today's) to
    DROP/outgoing/. Refused while the day is not over. Written again, it has the same bytes."""
    from ledger.billing_feed import write_feed_file
    from ledger.errors import Refused

    with open_database(config_path, url, refusals=Refused, needs_schema=True) as (settings, engine):
        actor = operator_actor((settings, engine), FEED_EXPORT)
        clock = business_clock(settings)
        now = clock.now()
        day = business_date.date() if business_date else clock.business_date(now) - timedelta(days=1)
        result = write_feed_file(engine, drop_dir or settings.drop_dir, day, clock=clock, now=now,
                                 actor=actor)
    click.echo(result.summary())
