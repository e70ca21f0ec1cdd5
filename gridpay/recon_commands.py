"""``gridpay recon ...`` and ``gridpay watch``.

Exit codes: 0 done (or nothing to do: a file already reconciled says so and exits 0); 1 the file
or the action was refused (the output says why; nothing was applied); 2 usage errors.
"""
from __future__ import annotations

import functools

import json
import sys

import click

from gridpay.operator_auth import operator_actor
from gridpay.options import business_clock, config_option, open_database, refuse, url_option
from runtime.bootstrap import on_stop_signals

WATCH_ACTOR = "system:recon-watch"
watch_actor_option = click.option(
    "--actor", default=WATCH_ACTOR, show_default=True,
    help="the process's audit actor, a system: name (an instance's, e.g. system:recon-watch-b); "
         "never a person's: a person's changes go through the operator commands")
reports_option = click.option("--reports", "reports_dir", type=click.Path(file_okay=False),
                              help="directory for the CSV and HTML reports (default: the configuration's reports_dir)")
lang_option = click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
                           help="the reports' language: Chinese, or English")
date_type = click.DateTime(formats=["%Y-%m-%d"])


@functools.cache
def _settings(config_path):
    """The configuration, read once per command (its engine and its reports folder come from it)."""
    from config import load_settings

    return load_settings(config_path)


def _reports(config_path, reports_dir: str | None, lang: str = "zh"):
    """The reports directory with its options: language, the site's clock and its banks' names."""
    from gridpay.options import business_clock
    from ledger.recon.report_labels import ReportsDir, options_of

    settings = _settings(config_path)
    return ReportsDir(reports_dir or settings.reports_dir, options_of(settings, lang, business_clock(settings)))


def _progress(quiet: bool = False):
    """Phases of a run on standard error (a bar on a terminal), so standard output stays the result."""
    from ledger.progress import NoProgress, Progress

    return NoProgress() if quiet else Progress()


def _print_errors(errors, limit: int) -> None:
    for line, fld, reason in errors[:limit]:
        click.echo(f"  line {line}, field {fld}: {reason}")
    if len(errors) > limit:
        click.echo(f"  ... and {len(errors) - limit} more (see the rejection report)")


def _rules(amount_tolerance, cheque_window, no_cheques):
    from ledger.recon.finance import FinanceRules

    return FinanceRules(amount_tolerance_fen=amount_tolerance, cheque_date_window_days=cheque_window,
                        match_cheques=not no_cheques)


@click.group()
def recon() -> None:
    """Reconciliation: bank files, finance statements, manual matching, reports."""


@recon.command("bank")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@reports_option
@lang_option
@click.option("--settle-debits", is_flag=True, help="settle every debit of unknown outcome by what the file shows")
@click.option("--max-errors", default=50, show_default=True, help="errors printed (all go to the rejection report)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@config_option
@url_option
def bank(path, reports_dir, lang, settle_debits, max_errors, as_json, config_path, url) -> None:
    """First reconciliation: a bank's transaction file (docs/spec/INTERFACE.md §7.1) against the ledger; closes the date."""
    from ledger.recon.matching import reconcile_bank_file

    with open_database(config_path, url) as (settings, engine):
        actor = operator_actor((settings, engine), "recon.run")
        clock = business_clock(settings)
        r = reconcile_bank_file(engine, path, actor=actor, clock=clock,
                                reports_dir=_reports(config_path, reports_dir, lang), progress=_progress(as_json),
                                settle_debits=settle_debits)
    if as_json:
        click.echo(json.dumps({"status": r.status, "message": r.message, "run_id": r.run_id, "counts": r.counts,
                               "totals": r.totals, "timings_s": r.timings, "reports": [str(p) for p in r.reports],
                               "errors": [[e.line, e.field, e.reason] for e in (r.bank_file.errors if r.bank_file else [])],
                               "settled": r.settled}, default=str))
    else:
        click.echo(r.message)
        if r.status == "rejected" and r.bank_file is not None:
            _print_errors([(e.line, e.field, e.reason) for e in r.bank_file.errors], max_errors)
        for s in r.settled:
            click.echo(f"  item {s['item_id']}: debit {s['debit_id']} settled as {s['result']}")
        for p in r.reports:
            click.echo(f"report: {p}")
    if not r.ok:
        sys.exit(1)


@recon.command("finance")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@reports_option
@lang_option
@click.option("--amount-tolerance", default=0, show_default=True, type=click.IntRange(0), help="fen allowed between a credit and its match")
@click.option("--cheque-window-days", type=click.IntRange(0), default=None, help="days between a cheque credit and its payment (default: any)")
@click.option("--no-cheques", is_flag=True, help="do not match cheque credits automatically")
@click.option("--max-errors", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@config_option
@url_option
def finance(path, reports_dir, lang, amount_tolerance, cheque_window_days, no_cheques, max_errors, as_json,
            config_path, url) -> None:
    """Second reconciliation: the finance statement (camt.053 or CSV, docs/spec/INTERFACE.md §7.3)."""
    from ledger.recon.finance import reconcile_statement

    with open_database(config_path, url) as (settings, engine):
        actor = operator_actor((settings, engine), "statement.import")
        r = reconcile_statement(engine, path, actor=actor, reports_dir=_reports(config_path, reports_dir, lang),
                                progress=_progress(as_json),
                                rules=_rules(amount_tolerance, cheque_window_days, no_cheques))
    if as_json:
        click.echo(json.dumps({"status": r.status, "message": r.message, "run_id": r.run_id, "counts": r.counts,
                               "reports": [str(p) for p in r.reports], "errors": r.errors}, default=str))
    else:
        click.echo(r.message)
        if r.status == "rejected":
            _print_errors(r.errors, max_errors)
        for p in r.reports:
            click.echo(f"report: {p}")
    if not r.ok:
        sys.exit(1)


def _amount(v) -> str:
    from ledger.reports.cells import yuan

    return "" if v is None else yuan(int(v))


@recon.command("open")
@click.option("--bank", help="bank code")
@click.option("--date", "business_date", type=date_type, help="business date YYYY-MM-DD")
@click.option("--kind", help="item kind (bank_only, ledger_only, amount_differs, status_differs, debit_unknown, remittance, cheque, credit, ...)")
@click.option("--run", "run_id", type=int, help="only this run's items")
@config_option
@url_option
def open_(bank, business_date, kind, run_id, config_path, url) -> None:
    """List open items by bank and date."""
    from ledger.recon.manual import open_items

    with open_database(config_path, url) as (_, engine):
        items = open_items(engine, bank=bank, business_date=business_date.date() if business_date else None, kind=kind,
                           run_id=run_id)
    group = None
    for i in items:
        key = (i["bank_code"] or "-", i["business_date"])
        if key != group:
            group = key
            click.echo(f"bank {key[0]}  {key[1]}")
        click.echo(f"  {i['item_id']:>8}  {i['kind']:<15} {i['channel'] or i['direction'] or '':<2} "
                   f"{(i['rrn'] or i['reference'] or i['cheque_no'] or ''):<14} {i['customer_no'] or '':<12} "
                   f"bank {_amount(i['bank_amount']):>12}  ledger {_amount(i['ledger_amount']):>12}  {i['detail']}")
    click.echo(f"{len(items)} open item(s)")




@recon.command("show")
@click.argument("item_id", type=int)
@config_option
@url_option
def show(item_id, config_path, url) -> None:
    """Show one item with its candidates ranked (same amount, near date, same customer)."""
    from ledger.errors import Refused
    from ledger.recon.manual import show_item

    with open_database(config_path, url, refusals=Refused) as (_, engine):
        shown = show_item(engine, item_id)
    item = shown["item"]
    for key in ("item_id", "run_id", "kind", "status", "bank_code", "business_date", "channel", "rrn", "customer_no",
                "bank_amount", "ledger_amount", "bank_status", "ledger_status", "payment_id", "debit_id", "line_no",
                "transmitted", "stan", "direction", "reference", "cheque_no", "counterparty", "detail", "resolution",
                "resolved_by", "resolved_at", "note"):
        if item.get(key) not in (None, ""):
            value = _amount(item[key]) + " yuan" if key.endswith("_amount") else item[key]
            click.echo(f"{key:>14}: {value}")
    if shown["match"]:
        m = shown["match"]
        click.echo(f"{'match':>14}: {m['match_id']} ({m['kind']}, by {m['created_by']} at {m['created_at']:%Y-%m-%d %H:%M}) {m['note']}")
    if shown["candidates"]:
        click.echo("candidates:")
        for c in shown["candidates"]:
            click.echo(f"  {c['type']:<8}{c['id']:>8}  score {c['score']:>3}  {_amount(c['amount']):>12}  {c['date']}  "
                       f"{c['customer_no'] or '':<12} {c['kind']}  ({c['why']})")
    elif item["status"] == "open":
        click.echo("no candidates")


@recon.command("match")
@click.argument("item_ids", type=int, nargs=-1, required=True)
@click.option("--payment", "payment_ids", type=int, multiple=True, help="a ledger payment on the other side (repeatable)")
@click.option("--run", "run_ids", type=int, multiple=True, help="a bank run (its expected remittance) on the other side")
@click.option("--note", default="", help="why")
@click.option("--tolerance", default=0, show_default=True, type=click.IntRange(0), help="fen the sides may differ")
@config_option
@url_option
def match(item_ids, payment_ids, run_ids, note, tolerance, config_path, url) -> None:
    """Match items by hand: one to one or many to one (items, payments, bank runs)."""
    from ledger.errors import Refused
    from ledger.recon.manual import match_items

    with open_database(config_path, url, refusals=Refused) as (settings, engine):
        actor = operator_actor((settings, engine), "recon.match")
        match_id = match_items(engine, list(item_ids), payment_ids=list(payment_ids), run_ids=list(run_ids),
                               actor=actor, note=note, tolerance=tolerance)
    click.echo(f"match {match_id}: items {', '.join(map(str, item_ids))} matched")


@recon.command("unmatch")
@click.argument("match_id", type=int, required=False)
@click.option("--item", "item_id", type=int, help="undo the match this item is in")
@click.option("--reason", required=True)
@config_option
@url_option
def unmatch_(match_id, item_id, reason, config_path, url) -> None:
    """Undo a manual match: its items are open again."""
    from ledger.errors import Refused
    from ledger.recon.manual import match_of_item, unmatch

    with open_database(config_path, url, refusals=Refused) as (settings, engine):
        actor = operator_actor((settings, engine), "recon.match")
        if match_id is None:
            if item_id is None:
                raise click.UsageError("give MATCH_ID or --item")
            match_id = match_of_item(engine, item_id)
            if match_id is None:
                refuse(f"item {item_id} is not in a match")
        items = unmatch(engine, match_id, actor=actor, reason=reason)
    click.echo(f"match {match_id} undone; items {', '.join(map(str, items))} open again")




@recon.command("resolve")
@click.argument("item_id", type=int)
@click.option("--action", type=click.Choice(["accept", "post", "reverse", "settle"]), default="accept", show_default=True,
              help="accept the difference; post the bank-only payment (补账); reverse the ledger's payment; "
                   "settle an unknown debit by the bank's file")
@click.option("--reason", required=True, help="why (kept as the item's note and in the audit log)")
@click.option("--method", default="01", show_default=True, type=click.Choice(["01", "02", "03"]), help="payment method for post")
@click.option("--cheque-no", help="cheque number for post with --method 03")
@config_option
@url_option
def resolve(item_id, action, reason, method, cheque_no, config_path, url) -> None:
    """Resolve an open item with a reason, through the ledger's own operations."""
    from ledger.errors import Refused
    from ledger.recon.resolutions import resolve_item

    with open_database(config_path, url, refusals=Refused) as (settings, engine):
        actor = operator_actor((settings, engine), "recon.match")
        clock = business_clock(settings)
        done = resolve_item(engine, item_id, action, actor=actor, reason=reason, method=method,
                            cheque_no=cheque_no, clock=clock)
    extra = ", ".join(f"{k} {v}" for k, v in done.items() if k not in ("item_id", "action", "resolution"))
    click.echo(f"item {item_id} {done['resolution']}" + (f": {extra}" if extra else ""))


@recon.command("report")
@click.option("--date", "business_date", type=date_type, required=True, help="business date YYYY-MM-DD")
@reports_option
@lang_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table", show_default=True)
@config_option
@url_option
def report(business_date, reports_dir, lang, fmt, config_path, url) -> None:
    """The day across banks (the catalogue's ``recon-day``): text table (or CSV) on standard output,
    CSV + HTML in the reports directory."""
    import io
    import time

    from ledger.recon.day_reports import day_doc, write_day_reports
    from ledger.reports.catalogue import write

    out = _reports(config_path, reports_dir, lang)
    with open_database(config_path, url) as (_, engine):
        t0 = time.perf_counter()
        day = business_date.date()
        paths = write_day_reports(engine, day, out)
        shown = io.BytesIO()
        write(day_doc(out.options.context(engine), day), "text" if fmt == "table" else "csv", shown, lang)
    _progress().step(f"reconciliation day report {business_date:%Y-%m-%d}: {len(paths)} files in "
                     f"{time.perf_counter() - t0:.1f} s")
    click.echo(shown.getvalue().decode("utf-8").lstrip("\ufeff"), nl=False)
    if fmt == "table":
        for p in paths:
            click.echo(f"report: {p}")


@recon.command("run-report")
@click.argument("run_id", type=int)
@reports_option
@lang_option
@config_option
@url_option
def run_report(run_id, reports_dir, lang, config_path, url) -> None:
    """Write a run's CSV + HTML reports again, as the run and its items stand now (e.g. after
    resolutions, or in the other language); ``gridpay report recon-run`` gives it in any format."""
    from ledger.errors import Refused
    from ledger.recon.run_reports import write_run_reports

    with open_database(config_path, url, refusals=Refused) as (_, engine):
        for p in write_run_reports(engine, run_id, _reports(config_path, reports_dir, lang)):
            click.echo(f"report: {p}")


def _serve_recon_metrics(engine, host: str, port: int, stop) -> None:
    """Prometheus /metrics for the watcher, refreshed from the database on a thread of its own."""
    from ledger.recon.recon_metrics import ReconMetrics
    from runtime.process_metrics import serve_threaded

    port = serve_threaded(ReconMetrics(), engine, host, port, stop)
    click.echo(f"gridpay watch: metrics on http://{host}:{port}/metrics")


@click.command()
@click.option("--dir", "drop_dir", type=click.Path(file_okay=False),
              help="the drop directory (default: the configuration's drop_dir)")
@click.option("--once", is_flag=True, help="process what is there now and exit")
@click.option("--interval", type=click.FloatRange(0.1), help="seconds between polls (default: watch.interval_s)")
@click.option("--settle-debits", is_flag=True, help="settle unknown debits by the bank files")
@click.option("--amount-tolerance", default=0, show_default=True, type=click.IntRange(0))
@click.option("--cheque-window-days", type=click.IntRange(0), default=None)
@click.option("--metrics-host", help="address of /metrics (default: watch.metrics_host)")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="/metrics (open reconciliation items, database reachability); 0 = any free port "
                   "(default: watch.metrics_port)")
@lang_option
@watch_actor_option
@config_option
@url_option
def watch(drop_dir, once, interval, settle_debits, amount_tolerance, cheque_window_days, metrics_host, metrics_port,
          lang, actor, config_path, url) -> None:
    """Watch a drop directory (incoming/ processed/ rejected/ reports/) and process each complete file once.

    Writers put a file in incoming/ under a temporary name (leading '.', or ending .part/.tmp/.partial)
    and rename it when complete."""
    import threading

    from ledger.recon.drop_files import MIB
    from ledger.recon.report_labels import options_of
    from ledger.recon.watch import DropWatcher, poll_forever

    from runtime.logging_setup import setup_logging

    if not actor.startswith("system:") or actor == "system:":
        raise click.BadParameter(f"{actor!r} is not a system: name; the watcher is a process, not a person",
                                 param_hint="--actor")
    setup_logging()
    with open_database(config_path, url) as (settings, engine):
        drop_dir = drop_dir or settings.drop_dir
        interval = interval or settings.watch.interval_s
        metrics_host = metrics_host or settings.watch.metrics_host
        metrics_port = settings.watch.metrics_port if metrics_port is None else metrics_port
        clock = business_clock(settings)
        watcher = DropWatcher(engine, drop_dir, actor=actor, clock=clock,
                              rules=_rules(amount_tolerance, cheque_window_days, False), settle_debits=settle_debits,
                              interval_s=interval, max_file_bytes=settings.watch.max_file_mib * MIB,
                              hold_until_day_ended=settings.watch.hold_bank_files_until_day_ended,
                              report_options=options_of(settings, lang, clock))

        def show(r) -> None:
            click.echo(f"{r.outcome}: {r.name} ({r.kind}): {r.message}")
            for p in r.reports:
                click.echo(f"  report: {p}")

        if once:
            results = watcher.poll_once()
            for r in results:
                show(r)
            click.echo(f"{len(results)} file(s): " + ", ".join(
                f"{sum(1 for r in results if r.outcome == o)} {o}" for o in ("processed", "rejected", "duplicate")))
            return
        stop = threading.Event()
        on_stop_signals(lambda *_: stop.set())
        _serve_recon_metrics(engine, metrics_host, metrics_port, stop)
        poll_forever(watcher, interval, stop, show)
