"""``gridpay sim``: simulated banks for demos, tests and load."""
from __future__ import annotations

import json
import os
import sys

import click


@click.group()
def sim() -> None:
    """Simulated banks: a bank's counter system (load generator)."""


def customers_from_db(url: str, limit: int) -> list[str]:
    """Active customers that have bills, oldest customers first."""
    from sqlalchemy import select

    from ledger.db import make_engine
    from ledger.schema import bills, customers

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = (select(customers.c.customer_no).where(customers.c.status == "A")
                     .where(customers.c.customer_no.in_(select(bills.c.customer_no)))
                     .order_by(customers.c.customer_no).limit(limit))
            return [row[0] for row in conn.execute(query)]
    finally:
        engine.dispose()


@sim.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, required=True, help="the gateway's counter listener")
@click.option("--dialect", default="ascii", show_default=True, help="ascii | bcd (or a preset with --framing etc.)")
@click.option("--framing", default=None)
@click.option("--fields", "field_encoding", default=None)
@click.option("--mac", default=None)
@click.option("--bank", required=True, help="bank code sent in field 32")
@click.option("--zmk-env", default="", help="environment variable holding the bank's ZMK (hex)")
@click.option("--zmk-file", default="", help="file holding the bank's ZMK (hex)")
@click.option("--customers", "customer_file", type=click.Path(exists=True, dir_okay=False),
              help="file with one customer number per line")
@click.option("--db", "db_url", help="take customers with bills from this database instead")
@click.option("--connections", default=4, show_default=True)
@click.option("--window", default=16, show_default=True, help="requests in flight per connection")
@click.option("--rate", default=0.0, show_default=True, help="operations per second; 0 = as fast as possible")
@click.option("--count", type=int, default=1000, show_default=True, help="operations to run")
@click.option("--duration", type=float, default=None, help="stop after this many seconds instead")
@click.option("--mix", "mix_text", default="pay=100", show_default=True,
              help="weights, e.g. pay=90,reverse=4,repeat=3,malformed=3")
@click.option("--seed", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the figures as one JSON object")
def counter(host, port, dialect, framing, field_encoding, mac, bank, zmk_env, zmk_file, customer_file, db_url,
            connections, window, rate, count, duration, mix_text, seed, as_json) -> None:
    """A bank's counter system: sign on, then inquiries, payments, reversals, repeats and
    malformed frames against the gateway; every answer is checked. Exit status 1 on any mismatch."""
    from config import read_secret
    from gateway.serve import install_reactor
    from gateway.sim.counter import CounterSimulator, Mix
    from iso8583_specs.dialects import get_dialect

    zmk = bytes.fromhex(read_secret("zmk", zmk_env, zmk_file, os.environ))
    if customer_file:
        with open(customer_file) as fh:
            customers = [line.strip() for line in fh if line.strip()]
    elif db_url:
        customers = customers_from_db(db_url, count if duration is None else 10_000_000)
    else:
        raise click.UsageError("give --customers FILE or --db URL")
    reactor = install_reactor()
    from twisted.internet import defer, task

    simulator = CounterSimulator(reactor, host, port, get_dialect(dialect, framing, field_encoding, mac), bank, zmk,
                                 customers, connections=connections, window=window, rate=rate, count=count,
                                 duration=duration, mix=Mix.parse(mix_text), seed=seed)
    outcome = {}

    async def main(_reactor):
        outcome["report"] = await simulator.run()

    try:
        task.react(lambda r: defer.ensureDeferred(main(r)))
    except SystemExit as exc:
        if exc.code:
            raise
    report = outcome.get("report")
    if report is None:
        sys.exit(2)
    click.echo(json.dumps(report.summary()) if as_json else report.text())
    sys.exit(1 if report.mismatches else 0)
