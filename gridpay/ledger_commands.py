"""``gridpay db``, ``gridpay ledger`` and ``gridpay report``."""
from __future__ import annotations

import click

from gridpay.feed_commands import feed
from gridpay.operator_auth import current_operator, operator_actor
from gridpay.options import business_clock, config_option, database_url, open_database, refuse, url_option

@click.group()
def db() -> None:
    """Create, migrate and inspect the database."""


@db.command()
@config_option
@url_option
@click.option("--revision", default="heads", show_default=True, help="migrate to this revision")
def upgrade(config_path, url, revision) -> None:
    """Create the database or migrate it to the newest schema (SQLite, PostgreSQL, Oracle).

    Oracle needs its driver: pip install 'gridpay[oracle]'. It is untested against a server (none was
    available): tests only compile the Oracle DDL and statements with SQLAlchemy's Oracle dialect."""
    from ledger import migrate

    target = database_url(config_path, url)
    migrate.upgrade(target, revision)
    click.echo(f"database at revision {migrate.current(target)}")


@db.command()
@config_option
@url_option
def current(config_path, url) -> None:
    """Print the schema revision the database is at; exit 1 when it is not at the newest."""
    from ledger import migrate

    at, newest = migrate.current(database_url(config_path, url)), migrate.newest()
    if at == newest:
        click.echo(f"{at} (newest)")
        return
    click.echo(f"{at or '(empty)'}: not at the newest revision {newest}; run gridpay db upgrade", err=True)
    raise SystemExit(1)


@db.command()
@config_option
@url_option
@click.option("--ahead", default=3, show_default=True, type=click.IntRange(min=0),
              help="prepare this many months after the first one")
@click.option("--from-month", metavar="YYYYMM", help="the first month to prepare (default: the current one)")
@click.option("--exact", is_flag=True, help="count each partition's rows (reads every partition whole) "
              "instead of PostgreSQL's estimate")
def partitions(config_path, url, ahead, from_month, exact) -> None:
    """Prepare the monthly partitions of this month and the next ones (PostgreSQL; it may run any
    number of times), then list every partition with its rows (PostgreSQL's estimate, or counted
    with --exact) and size (docs/runbook.md "Partitions")."""
    from config.clock import SYSTEM_CLOCK
    from ledger import partitions as monthly

    with open_database(config_path, url, refusals=ValueError) as (settings, engine):
        actor = operator_actor((settings, engine), "database.manage")
        clock = business_clock(settings)
        first = monthly.first_of_month(from_month) if from_month else clock.business_date()
        made = monthly.prepare_audited(engine, first, ahead, actor, SYSTEM_CLOCK.now())
        with engine.connect() as conn:
            listing = monthly.partitions(conn, exact=exact)
    if not listing:
        click.echo("no partitioned tables (monthly partitions are PostgreSQL's only)")
        return
    click.echo(f"made {len(made)} partition(s)" + (f": {', '.join(made)}" if made else " (all were there)"))
    click.echo("rows counted (--exact)" if exact else
               "rows are PostgreSQL's estimates as of each partition's last ANALYZE (--exact counts them)")
    for p in listing:
        rows = "not analysed" if p.rows is None else f"{'' if p.exact else '~'}{p.rows:,} rows"
        click.echo(f"{p.name:32} {rows:>16} {p.bytes / 2**20:>10.1f} MiB  {p.bounds}")


DIALECT_URLS = {"oracle": "oracle+oracledb://", "postgresql": "postgresql+psycopg://", "sqlite": "sqlite://"}


@db.command()
@config_option
@url_option
@click.option("--dialect", type=click.Choice(sorted(DIALECT_URLS)),
              help="print for this dialect without touching any database (default: the configured database's)")
@click.option("--from", "from_revision", metavar="REVISION",
              help="start from this revision instead of the one the database is at ('base': the whole schema)")
def sql(config_path, url, dialect, from_revision) -> None:
    """Print the SQL that would take the database to the newest schema, for a DBA to review.

    By default it reads the configured database's revision and prints, in that database's
    dialect, only the migrations it still needs (nothing changes in the database; SQLite's are
    found by migrating a copy, since SQLite rebuilds a table to alter it). With --dialect
    nothing is read: the SQL starts at --from (default: an empty database). Oracle's SQL is
    compiled by SQLAlchemy's Oracle dialect; it has not been run on an Oracle server here."""
    from alembic import command
    from sqlalchemy.engine import make_url

    from ledger import migrate

    if dialect:
        target, start = DIALECT_URLS[dialect], from_revision
    else:
        target = database_url(config_path, url)
        start = from_revision or migrate.current(target)
        if start == migrate.newest():
            click.echo(f"-- the database is at the newest revision {start}: nothing to apply", err=True)
            return
    backend = make_url(target).get_backend_name()
    if backend == "sqlite" and not dialect:
        click.echo("BEGIN;\n")
        for statement in migrate.sqlite_upgrade_sql(target):
            click.echo(f"{statement};\n")
        click.echo("COMMIT;")
        return
    config = migrate.alembic_config(DIALECT_URLS.get(backend, target))
    if start in (None, "base"):
        command.upgrade(config, "heads", sql=True)
        return
    for begin, end in migrate.pending_ranges(start.split(",")):
        command.upgrade(config, f"{begin}:{end}", sql=True)


# ---------------------------------------------------------------------------------------------
# gridpay ledger: imports, corrections, refunds, verification


@click.group()
def ledger() -> None:
    """Back office of the receivables ledger: imports, corrections, refunds, the billing feed."""


ledger.add_command(feed)


@ledger.command("import")
@click.argument("kind", type=click.Choice(["customers", "bills", "agreements", "set"]))
@click.argument("path", type=click.Path(exists=True))
@config_option
@url_option
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="write the rejection report (CSV: file,line,column,reason) here")
@click.option("--max-errors", default=100, show_default=True, help="errors printed per file (all go to --report)")
def import_(kind, path, config_path, url, report_path, max_errors) -> None:
    """Import a billing file (KIND customers|bills|agreements, PATH a CSV file), or a file set
    (KIND set, PATH a directory holding customers.csv, bills.csv, agreements.csv) in one go.

    A file is applied whole or rejected whole; the rejection report names every bad line,
    its column and the reason. Exit status 1 when rejected."""
    from pathlib import Path

    from ledger.imports import import_files, set_files, write_report
    from ledger.progress import Progress

    with open_database(config_path, url) as (settings, engine):
        actor = operator_actor((settings, engine), "billing.import")
        if kind == "set":
            files = set_files(path)
            if not files:
                raise click.UsageError(f"{path} holds none of customers.csv, bills.csv, agreements.csv")
        else:
            if Path(path).is_dir():
                raise click.UsageError(f"{path} is a directory; give a file, or use KIND 'set'")
            files = {kind: path}
        known_banks = {code: bank.name for code, bank in settings.banks.items()} or None
        # progress on stderr: a bar on a terminal, a line every 5 s otherwise; the summary on stdout
        results = import_files(engine, files, actor, clock=business_clock(settings),
                               known_banks=known_banks, progress=Progress())
    rejected = any(r.errors for r in results.values())
    for r in results.values():
        click.echo(r.summary())
        for e in r.errors[:max_errors]:
            click.echo(f"  {e}")
        if len(r.errors) > max_errors:
            click.echo(f"  ... and {len(r.errors) - max_errors} more" + ("" if report_path else " (use --report FILE)"))
    if rejected:
        if len(results) > 1:
            click.echo("the file set was rejected: nothing of it was applied")
        if report_path:
            write_report(results.values(), report_path)
            click.echo(f"rejection report written to {report_path}")
        raise SystemExit(1)


@ledger.command()
@click.argument("bill_id")
@click.option("--principal", type=int, required=True, help="the corrected principal, fen")
@click.option("--penalty", type=int, required=True, help="the corrected penalty, fen")
@click.option("--due-date", type=click.DateTime(formats=["%Y-%m-%d"]), help="new due date (default: the original's)")
@click.option("--new-bill-id", help="id of the replacement bill (default: <first bill id>N<k>)")
@click.option("--reason", required=True, help="why (kept in the audit log)")
@config_option
@url_option
def correct(bill_id, principal, penalty, due_date, new_bill_id, reason, config_path, url) -> None:
    """Correct a bill (冲红改单): reverse it and replace it with the corrected amounts."""
    from ledger.corrections import correct_bill
    from ledger.errors import Refused

    with open_database(config_path, url, refusals=Refused) as (settings, engine):
        actor = operator_actor((settings, engine), "correction.request")
        result = correct_bill(engine, bill_id, principal=principal, penalty=penalty, actor=actor, reason=reason,
                              due_date=due_date.date() if due_date else None, new_bill_id=new_bill_id,
                              clock=business_clock(settings))
    click.echo(result.summary())


@ledger.command()
@click.argument("customer_no")
@click.argument("amount_fen", type=int)
@click.option("--reason", required=True, help="why (kept in the audit log)")
@config_option
@url_option
def refund(customer_no, amount_fen, reason, config_path, url) -> None:
    """Refund AMOUNT_FEN of a customer's prepaid balance (large ones wait for two approvals)."""
    from ledger.errors import Refused
    from ledger.refunds import request_refund

    with open_database(config_path, url, refusals=Refused) as (settings, engine):
        actor = operator_actor((settings, engine), "refund.request")
        result = request_refund(engine, customer_no, amount_fen, actor=actor, reason=reason,
                                business=settings.business)
    click.echo(result.summary())


# an approver decides at the level their role gives (docs/access.md, "Large refunds: two approvals")
REFUND_APPROVALS = ("refund.approve.accounting", "refund.approve.director")


@ledger.command()
@click.argument("refund_id", type=int)
@click.option("--note", default="", help="a note kept with the decision")
@config_option
@url_option
def approve(refund_id, note, config_path, url) -> None:
    """Give the signed-in operator's approval of a pending refund (accounting or director, by role); the
    second pays it."""
    from ledger.errors import Refused
    from ledger.refunds import approve_refund

    with open_database(config_path, url, refusals=Refused) as (settings, engine):
        approver = current_operator((settings, engine), *REFUND_APPROVALS)   # its role gives the level
        result = approve_refund(engine, refund_id, approver=approver, note=note, business=settings.business)
    click.echo(result.summary())


@ledger.command()
@click.argument("refund_id", type=int)
@click.option("--reason", required=True, help="why (kept in the audit log)")
@config_option
@url_option
def reject(refund_id, reason, config_path, url) -> None:
    """Reject a pending refund; nothing is paid."""
    from ledger.errors import Refused
    from ledger.refunds import reject_refund

    with open_database(config_path, url, refusals=Refused) as (settings, engine):
        approver = current_operator((settings, engine), *REFUND_APPROVALS)
        result = reject_refund(engine, refund_id, approver=approver, reason=reason, business=settings.business)
    click.echo(result.summary())


@ledger.command()
@click.argument("refund_id", type=int)
@click.option("--reference", required=True, help="the transfer's reference")
@config_option
@url_option
def payout(refund_id, reference, config_path, url) -> None:
    """Record that a paid refund was paid out to the customer: its amount leaves refunds payable (once)."""
    from ledger.errors import Refused
    from ledger.refunds import record_payout_in

    with open_database(config_path, url, refusals=Refused) as (settings, engine):
        actor = operator_actor((settings, engine), "refund.payout")
        with engine.begin() as conn:
            result = record_payout_in(conn, refund_id, actor=actor, reference=reference,
                                      now=business_clock(settings).now(), business=settings.business)
    click.echo(f"{result.summary()}; paid out ({result.payout_reference})")


@ledger.command()
@click.option("--all", "show_all", is_flag=True, help="all refunds, not only the pending ones")
@click.option("--customer", help="only this customer's")
@config_option
@url_option
def refunds(show_all, customer, config_path, url) -> None:
    """List refunds waiting for approval (or all with --all)."""
    from ledger.reports.cells import yuan
    from ledger.refunds import list_refunds

    with open_database(config_path, url) as (_, engine):
        found = list_refunds(engine, None if show_all else "pending", customer)
    if not found:
        click.echo("no refunds" if show_all else "no pending refunds")
        return
    header = ("id", "customer", "amount", "status", "requested_by", "requested_at", "decided_by", "reason")
    rows = [(str(r.refund_id), r.customer_no, yuan(r.amount, grouped=False), r.status, r.requested_by,
             r.requested_at.strftime("%Y-%m-%d %H:%M"), r.decided_by or "", r.reason) for r in found]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in [header, *rows]:
        click.echo("  ".join(v.rjust(w) if i == 2 else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))).rstrip())


@ledger.command()
@config_option
@url_option
def verify(config_path, url) -> None:
    """Check the ledger's invariants (balanced entries, balances agree with their records)."""
    try:
        from ledger.verify import verify as verify_ledger
    except ImportError:
        click.echo("ledger verification is not available in this build (ledger.verify)", err=True)
        raise SystemExit(2)
    with open_database(config_path, url) as (_, engine):
        failures = verify_ledger(engine)
    for failure in failures:
        click.echo(f"FAIL {failure}")
    if failures:
        click.echo(f"{len(failures)} failure(s)")
        raise SystemExit(1)
    click.echo("ledger verifies: OK")


@ledger.command()
@click.option("--before", metavar="YYYY-MM", help="archive the months before this one (default: the retention's "
              "limit, this business month less archive.retention_months)")
@click.option("--dry-run", is_flag=True, help="print what would go (months, tables, rows, openings); change nothing")
@config_option
@url_option
def archive(before, dry_run, config_path, url) -> None:
    """Archive months older than the retention period: their rows go to archive files
    (archive.directory), their totals stay as openings, and `ledger verify` holds for what remains.

    A month with open bills keeps them and what they are tied to (docs/ledger.md). Idempotent:
    an archived month is never archived again. Refused: a --before newer than the retention allows."""
    import re

    from ledger.archive import ArchiveRefused, archive as archive_months, retention_limit
    from ledger.reports.cells import yuan

    if before is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", before):
        raise click.BadParameter(f"{before!r} is not a month YYYY-MM", param_hint="--before")
    with open_database(config_path, url) as (settings, engine):
        actor = operator_actor((settings, engine), "ledger.archive")
        clock, months = business_clock(settings), settings.archive.retention_months
        try:
            results = archive_months(engine, before or retention_limit(clock, months),
                                     directory=settings.archive.directory, actor=actor, clock=clock,
                                     retention_months=months, dry_run=dry_run,
                                     progress=lambda line: click.echo(line, err=True))
        except ArchiveRefused as exc:
            refuse(exc)
    for r in results:
        click.echo(r.line() + (f" -> {r.directory}" if r.directory else ""))
        for o in r.openings:
            amount = str(o["amount"]) if o["figure"] == "feed_rows" else yuan(o["amount"], grouped=False)
            click.echo(f"  opening {o['figure']} {o['key'] or '-'}: {amount}")
    click.echo(f"{len(results)} month(s) {'would be archived (dry run)' if dry_run else 'archived'}"
               if results else "nothing to archive")


# ---------------------------------------------------------------------------------------------
# gridpay report


class _ReportGroup(click.Group):
    """``gridpay report recon`` is ``gridpay recon report``, imported when used (it imports this module);
    the report definition's commands are gridpay/report_commands.py's."""

    def list_commands(self, ctx):
        from gridpay.report_commands import COMMANDS

        return sorted([*super().list_commands(ctx), "recon", *COMMANDS])

    def get_command(self, ctx, name):
        if name == "recon":
            from gridpay.recon_commands import report as recon_report

            return recon_report
        from gridpay.report_commands import COMMANDS

        return COMMANDS.get(name) or super().get_command(ctx, name)


@click.group(cls=_ReportGroup)
def report() -> None:
    """Finance reports: 实收 (confirmed), daily and monthly collections, month-end summary, aging,
    arrears list, debits by channel, receivables, reconciliation day report."""
