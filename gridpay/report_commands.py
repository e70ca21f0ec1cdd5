"""``gridpay report confirmed|daily|monthly|month-end|aging|arrears|receivables|debits|recon-day|recon-run``:
the reports of one definition (ledger/reports, docs/reports.md) as HTML, CSV, XLSX or text. Reads: no
operator needed (docs/access.md). HTML, CSV and text go to standard output unless ``--out FILE``;
XLSX needs ``--out``. ``daily``, ``receivables`` and ``debits`` print text unless told otherwise (as
they always have), and keep ``--csv FILE`` and ``--format table``. They read from the replica
(``database.replica_url``) where there is one, unless ``--url`` names a database."""
from __future__ import annotations

import sys
from datetime import date

import click

from gridpay.options import config_option, open_database, url_option

DATE = click.DateTime(formats=["%Y-%m-%d"])
MONTH = click.DateTime(formats=["%Y-%m", "%Y%m"])


def _options(fmt_option):
    return (url_option, config_option,
            click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
                         help="labels in Chinese or English"),
            click.option("--out", "out_path", type=click.Path(dir_okay=False),
                         help="write to FILE (standard output if not given; xlsx needs it)"),
            fmt_option)


def definition_options(command):
    """--format, --out, --lang, --config, --url: what every definition report takes."""
    for option in _options(click.option("--format", "fmt", type=click.Choice(["html", "csv", "xlsx", "text"]),
                                        default="html", show_default=True)):
        command = option(command)
    return command


def text_first_options(command):
    """The options of the reports that print text by default: ``--format table`` is ``text``, ``--csv
    FILE`` is ``--format csv --out FILE`` (``text_first`` reads them)."""
    for option in (click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
                                help="the same as --format csv --out FILE"),
                   *_options(click.option("--format", "fmt", default="text", show_default=True,
                                          type=click.Choice(["text", "table", "html", "csv", "xlsx"])))):
        command = option(command)
    return command


def text_first(fmt: str, out_path: str | None, csv_path: str | None) -> tuple[str, str | None]:
    if csv_path:
        return "csv", csv_path
    return ("text" if fmt == "table" else fmt), out_path


def run_report(name: str, fmt: str, out_path: str | None, lang: str, config_path, url, **params) -> None:
    """Build report ``name`` with ``params`` and write it; say on standard error where and how long."""
    import time

    from config.clock import Clock
    from ledger.errors import Refused
    from ledger.progress import Progress
    from ledger.reports.catalogue import ParameterError, ReportParams, build, write
    from ledger.reports.context import report_context

    if fmt == "xlsx" and not out_path:
        raise click.UsageError("--format xlsx writes a file: give --out FILE")
    t0 = time.perf_counter()
    with open_database(config_path, url, refusals=Refused, replica=True) as (settings, engine):
        ctx = report_context(engine, Clock.of(settings.business), settings.banks)
        try:
            doc = build(name, ctx, ReportParams(**params))
        except ParameterError as exc:
            raise click.UsageError(str(exc)) from None
        if out_path:
            with open(out_path, "wb") as fh:
                write(doc, fmt, fh, lang)
        else:
            write(doc, fmt, sys.stdout.buffer, lang)
            sys.stdout.flush()
    Progress().step(f"{name} report ({fmt}) in {time.perf_counter() - t0:.1f} s" + (f": {out_path}" if out_path else ""))


def _day(value) -> date | None:
    return value.date() if value is not None else None


@click.command()
@click.option("--date", "business_date", type=DATE, help="one business date YYYY-MM-DD")
@click.option("--from", "first", type=DATE, help="first business date (with --to)")
@click.option("--to", "last", type=DATE, help="last business date (with --from)")
@definition_options
def confirmed(business_date, first, last, fmt, out_path, lang, config_path, url) -> None:
    """实收: collections the second reconciliation confirmed, beside those not yet confirmed, by
    business date, bank, channel and method."""
    run_report("confirmed", fmt, out_path, lang, config_path, url, date=_day(business_date), first=_day(first),
               last=_day(last))


@click.command()
@click.option("--date", "business_date", required=True, type=DATE, help="the business date YYYY-MM-DD")
@text_first_options
def daily(business_date, csv_path, fmt, out_path, lang, config_path, url) -> None:
    """Collections of a business date by bank, channel and method; reversals; net."""
    run_report("daily", *text_first(fmt, out_path, csv_path), lang, config_path, url, date=_day(business_date))


@click.command()
@click.option("--date", "business_date", required=True, type=DATE, help="the business date YYYY-MM-DD")
@text_first_options
def debits(business_date, csv_path, fmt, out_path, lang, config_path, url) -> None:
    """Direct debits created on a business date by bank, channel (batch or the single debit's) and state."""
    run_report("debits", *text_first(fmt, out_path, csv_path), lang, config_path, url, date=_day(business_date))


@click.command()
@click.option("--period", required=True, help="billing period YYYYMM")
@text_first_options
def receivables(period, csv_path, fmt, out_path, lang, config_path, url) -> None:
    """Billed, collected and outstanding for a billing period, by customer type."""
    run_report("receivables", *text_first(fmt, out_path, csv_path), lang, config_path, url, period=period)


@click.command()
@click.option("--month", required=True, type=MONTH, help="YYYY-MM")
@definition_options
def monthly(month, fmt, out_path, lang, config_path, url) -> None:
    """A month's collections: each business date, and by bank, channel and method."""
    run_report("monthly", fmt, out_path, lang, config_path, url, month=_day(month))


@click.command("month-end")
@click.option("--month", required=True, type=MONTH, help="YYYY-MM")
@definition_options
def month_end(month, fmt, out_path, lang, config_path, url) -> None:
    """The month-end receivables summary: start, billed by category, corrections, collected,
    reversed, refunded, end - and the difference, which must be 0."""
    run_report("month-end", fmt, out_path, lang, config_path, url, month=_day(month))


@click.command()
@click.option("--as-of", "as_of", type=DATE, help="YYYY-MM-DD (default: today's business date)")
@definition_options
def aging(as_of, fmt, out_path, lang, config_path, url) -> None:
    """Open bills by age (not due, 0-30, 31-60, 61-90, >90 days past due), by district and customer type."""
    run_report("aging", fmt, out_path, lang, config_path, url, as_of=_day(as_of))


@click.command()
@click.option("--as-of", "as_of", type=DATE, help="YYYY-MM-DD (default: today's business date)")
@click.option("--district", help="only this district's customers")
@click.option("--min-days", type=click.IntRange(min=1), default=1, show_default=True,
              help="bills at least this many days past due")
@definition_options
def arrears(as_of, district, min_days, fmt, out_path, lang, config_path, url) -> None:
    """Customers with overdue bills, for follow-up: bills, amount, days overdue, collection type, mobile."""
    run_report("arrears", fmt, out_path, lang, config_path, url, as_of=_day(as_of), district=district,
               min_days=min_days)


@click.command("recon-day")
@click.option("--date", "business_date", required=True, type=DATE, help="the business date YYYY-MM-DD")
@definition_options
def recon_day(business_date, fmt, out_path, lang, config_path, url) -> None:
    """Each bank's reconciliation of a business date (``gridpay recon report`` also writes it to the
    reports directory)."""
    run_report("recon-day", fmt, out_path, lang, config_path, url, date=_day(business_date))


@click.command("recon-run")
@click.argument("run_id", type=click.IntRange(min=1))
@definition_options
def recon_run(run_id, fmt, out_path, lang, config_path, url) -> None:
    """One reconciliation run as it stands now: the bridge, the differences, the exceptions, the
    sign-off (``gridpay recon run-report`` writes it to the reports directory)."""
    run_report("recon-run", fmt, out_path, lang, config_path, url, run_id=run_id)


COMMANDS = {c.name: c for c in (confirmed, daily, monthly, month_end, aging, arrears, receivables, debits, recon_day,
                                 recon_run)}
