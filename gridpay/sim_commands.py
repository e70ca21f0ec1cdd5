"""``gridpay sim``: simulated banks for demos, tests and load."""
from __future__ import annotations

import json
import os
import sys

import click


@click.group()
def sim() -> None:
    """Simulated banks: a bank's counter system (load generator) and a bank's debit host."""


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


def write_receipts(path: str, report) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["kind", "customer", "amount", "receipt", "rrn"])
        out.writerows(("paid", *row) for row in report.approved)
        out.writerows(("reversed", "", "", receipt, "") for receipt in report.reversed)


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
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="seconds each request (and connecting) may take; a request not answered by then is counted "
                   "unanswered and its connection closed")
@click.option("--mix", "mix_text", default="pay=100", show_default=True,
              help="weights, e.g. pay=90,reverse=4,repeat=3,malformed=3")
@click.option("--seed", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the figures as one JSON object")
@click.option("--receipts", "receipts_file", type=click.Path(dir_okay=False),
              help="write every approved payment (customer,amount,receipt,rrn) and reversed receipt to this CSV")
def counter(host, port, dialect, framing, field_encoding, mac, bank, zmk_env, zmk_file, customer_file, db_url,
            connections, window, rate, count, duration, timeout, mix_text, seed, as_json, receipts_file) -> None:
    """A bank's counter system: sign on, then inquiries, payments, reversals, repeats and
    malformed frames against the gateway; every answer is checked. Exit status 1 on any mismatch,
    unanswered request or lost connection."""
    from config import read_secret
    from gateway.sim.counter_load import CounterSimulator, Mix
    from iso8583_specs.dialects import get_dialect
    from runtime.bootstrap import install_reactor
    from runtime.gc_settle import settle_gc

    zmk = bytes.fromhex(read_secret("zmk", zmk_env, zmk_file, os.environ, permissions="refuse"))
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
                                 duration=duration, mix=Mix.parse(mix_text), seed=seed, timeout=timeout)
    outcome = {}

    async def main(_reactor):
        settle_gc()  # the load generator's own collector pauses would count in the latencies it reports
        outcome["report"] = await simulator.run()

    try:
        task.react(lambda r: defer.ensureDeferred(main(r)))
    except SystemExit as exc:
        if exc.code:
            raise
    report = outcome.get("report")
    if report is None:
        sys.exit(2)
    if receipts_file:
        write_receipts(receipts_file, report)
    click.echo(json.dumps(report.summary()) if as_json else report.text())
    sys.exit(0 if report.clean else 1)


@sim.command()
@click.option("--host", "interface", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=int, default=0, show_default=True, help="0 = any free port (printed at start)")
@click.option("--dialect", default="ascii", show_default=True, help="ascii | bcd (or a preset with --framing etc.)")
@click.option("--framing", default=None)
@click.option("--fields", "field_encoding", default=None)
@click.option("--mac", default=None)
@click.option("--bank", required=True, help="this bank's code (field 32)")
@click.option("--zmk-env", default="", help="environment variable holding the bank's ZMK (hex)")
@click.option("--zmk-file", default="", help="file holding the bank's ZMK (hex)")
@click.option("--accounts", "accounts_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="CSV account_no,balance,limit,status (fen; limit 0 = none; status A or C)")
@click.option("--nii-gateway", default="0000", show_default=True)
@click.option("--nii-bank", default="0001", show_default=True)
@click.option("--latency-ms", type=float, default=0.0, show_default=True, help="mean answer latency")
@click.option("--latency-dist", type=click.Choice(["fixed", "uniform", "exponential"]), default="fixed",
              show_default=True)
@click.option("--decline", "decline_text", default="", help="forced declines by code, e.g. 51=0.02,05=0.01")
@click.option("--drop-before-apply", type=float, default=0.0, help="rate of requests dropped unapplied, unanswered")
@click.option("--drop-after-apply", type=float, default=0.0, help="rate of requests applied but unanswered")
@click.option("--disconnect", type=float, default=0.0, help="rate of requests applied, then the connection closed")
@click.option("--slow-rate", type=float, default=0.0, help="rate of answers delayed by --slow-ms more")
@click.option("--slow-ms", type=float, default=0.0)
@click.option("--duplicate-rate", type=float, default=0.0, help="rate of answers sent twice")
@click.option("--bad-mac-rate", type=float, default=0.0, help="rate of answers with a corrupted MAC")
@click.option("--refuse-mac-rate", type=float, default=0.0,
              help="rate of new debits answered A0 as if their MAC had not verified (nothing applied)")
@click.option("--echo-interval", type=float, default=None, help="echo an idle connection after this many seconds")
@click.option("--business-date", default=None, help="YYYY-MM-DD (default: today in the business timezone)")
@click.option("--day-file-dir", type=click.Path(file_okay=False), default=None,
              help="write the bank transaction file (docs/spec/INTERFACE.md §7.1) here on exit")
@click.option("--seed", default=1, show_default=True)
def bank(interface, port, dialect, framing, field_encoding, mac, bank, zmk_env, zmk_file, accounts_file,
         nii_gateway, nii_bank, latency_ms, latency_dist, decline_text, drop_before_apply, drop_after_apply,
         disconnect, slow_rate, slow_ms, duplicate_rate, bad_mac_rate, refuse_mac_rate, echo_interval,
         business_date, day_file_dir, seed) -> None:
    """A bank's host on the debit channel: the gateway connects, signs on, sends direct debits
    and reversals. Runs until SIGTERM/SIGINT, then prints its figures as JSON (and writes the
    day file when --day-file-dir is given). The first line printed is {"port": N, ...}."""
    from datetime import date

    from config import read_secret
    from gateway.sim.bank import BankHost, Behaviour, load_accounts, parse_rates
    from iso8583_specs.dialects import get_dialect
    from runtime.bootstrap import install_reactor
    from runtime.gc_settle import settle_gc

    zmk = bytes.fromhex(read_secret("zmk", zmk_env, zmk_file, os.environ, permissions="refuse"))
    try:
        behaviour = Behaviour(latency_ms=latency_ms, latency_dist=latency_dist, declines=parse_rates(decline_text),
                              drop_before_apply=drop_before_apply, drop_after_apply=drop_after_apply,
                              disconnect=disconnect, slow_rate=slow_rate, slow_ms=slow_ms,
                              duplicate_rate=duplicate_rate, bad_mac_rate=bad_mac_rate,
                              refuse_mac_rate=refuse_mac_rate, echo_interval_s=echo_interval)
        accounts = load_accounts(accounts_file)
        bd = date.fromisoformat(business_date) if business_date else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    reactor = install_reactor()
    host = BankHost(reactor, bank, get_dialect(dialect, framing, field_encoding, mac), zmk, accounts, behaviour,
                    seed=seed, business_date=bd, interface=interface, port=port, nii_gateway=nii_gateway,
                    nii_bank=nii_bank)
    bound = host.start()
    settle_gc()  # the accounts and the day's answers are long-lived: collectors must not walk them again and again
    click.echo(json.dumps({"port": bound, "bank": bank, "dialect": dialect, "accounts": len(accounts)}))
    sys.stdout.flush()
    reactor.run()  # Twisted stops the reactor on SIGINT and SIGTERM
    summary = {"applied": len(host.applied), "reversed": sum(1 for r in host.applied.values() if r.reversed),
               "debited_fen": host.books.debited_total(), "counters": dict(host.counters)}
    if day_file_dir:
        os.makedirs(day_file_dir, exist_ok=True)
        summary["day_file"] = str(host.write_day_file(day_file_dir))
    click.echo(json.dumps(summary))
