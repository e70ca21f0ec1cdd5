"""``archive(engine, before, ...)``: archive every month before ``before`` not yet archived, oldest
first, one transaction per month (docs/ledger.md, "Archiving old months").

Per month: choose the rows (``ledger.archive.selection``), write them to the month's files
(``ledger.archive.files``: fsynced, checksums read back), then in the same transaction remove
them (``ledger.archive.remove``), write the openings they carry, a prepaid movement of kind
``opening`` per customer whose removed movements do not net to 0, the ``archived_months`` row
and an audit row. A failure before the commit leaves the month whole (its files are rewritten
by the next run).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import partial
from typing import Callable, Iterator

from sqlalchemy import func, insert, select

from ledger.archive.carry import carry_prepaid, month_openings
from ledger.archive.files import write_month
from ledger.archive.remove import remove_month
from ledger.archive.selection import Window, parts, select_month
from ledger.archive.tables import archive_openings, archived_months
from ledger.audit import audit_row, write_audit
from ledger.errors import Refused
from ledger.schema import audit_log, bills, journal_entries, outbox, payments, prepaid_movements

# deleted in this order: rows naming another before the row they name; the tables partitioned by
# month (whose partitions may be detached, which locks the table until the commit) as late as that allows
REMOVAL_ORDER = ("billing_feed", "recon_match_members", "recon_matches", "recon_items",
                 "recon_drop_files", "recon_runs", "debit_bills", "debit_attempts", "allocations",
                 "prepaid_movements", "reversals", "payments", "debits", "bills", "outbox", "journal_lines",
                 "journal_entries", "audit_log")
STREAM_BATCH = 10_000     # rows a server-side cursor hands over at a time


class ArchiveRefused(Refused):
    """The archive was asked for something it may not do; nothing was changed."""


@dataclass
class MonthResult:
    month: str
    rows: dict[str, int] = field(default_factory=dict)
    openings: list[dict] = field(default_factory=list)
    directory: str = ""

    def line(self) -> str:
        counted = ", ".join(f"{t} {n}" for t, n in sorted(self.rows.items()) if n)
        return f"{self.month}: {sum(self.rows.values())} rows ({counted or 'none'})"


def month_of(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def first_of(month: str) -> date:
    year, mon = (int(x) for x in month.split("-"))
    return date(year, mon, 1)


def next_month(month: str) -> str:
    first = first_of(month)
    return month_of(date(first.year + first.month // 12, first.month % 12 + 1, 1))


def window_of(month: str, clock) -> Window:
    following = first_of(next_month(month))
    return Window(month, clock.end_of(following - timedelta(days=1)), following)


def retention_limit(clock, retention_months: int) -> str:
    """The newest ``--before`` retention allows: this business month less ``retention_months``."""
    today = clock.business_date()
    index = today.year * 12 + today.month - 1 - retention_months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def months_to_archive(conn, before: str, clock) -> list[str]:
    """Months from the oldest holding rows to the one before ``before``, less those archived."""
    oldest = [conn.execute(select(func.min(c))).scalar_one() for c in
              (journal_entries.c.business_date, payments.c.business_date, bills.c.created_at,
               outbox.c.created_at, audit_log.c.at, prepaid_movements.c.created_at)]
    dates = [clock.business_date(_aware(d)) if isinstance(d, datetime) else d for d in oldest if d is not None]
    done = set(conn.execute(select(archived_months.c.month)).scalars())
    if not dates:
        return []
    months, month = [], month_of(min(dates))
    while month < before:
        if month not in done:
            months.append(month)
        month = next_month(month)
    return months


def _aware(at: datetime) -> datetime:
    """SQLite gives MIN() of a timestamp without its zone: stored UTC."""
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def archive(engine, before: str, *, directory: str, actor: str, clock, retention_months: int,
            dry_run: bool = False, progress: Callable[[str], None] = lambda line: None,
            before_removal: Callable[[str], None] = lambda month: None) -> list[MonthResult]:
    """Archive the months before ``before`` (YYYY-MM). Refuses (``ArchiveRefused``) a ``before``
    newer than the retention allows. ``before_removal``: called once the month's files are written,
    before its rows are removed (a test's crash)."""
    limit = retention_limit(clock, retention_months)
    if before > limit:
        raise ArchiveRefused(f"--before {before} is newer than the retention of {retention_months} months allows "
                             f"(at most {limit}): nothing archived")
    with engine.connect() as conn:
        months = months_to_archive(conn, before, clock)
    results = []
    for month in months:
        progress(f"{month}: choosing rows")
        results.append(_archive_month(engine, window_of(month, clock), directory, actor, clock, dry_run, progress,
                                      before_removal))
        progress(results[-1].line() + (" (dry run: nothing changed)" if dry_run else " archived"))
    return results


def _archive_month(engine, window: Window, directory, actor, clock, dry_run, progress, before_removal) -> MonthResult:
    conn_options = {"isolation_level": "SERIALIZABLE"} if engine.dialect.name == "postgresql" else {}
    with engine.connect().execution_options(**conn_options) as conn, conn.begin() as tx:
        marks = select_month(conn, window)
        removing = parts(marks, window)
        openings = month_openings(conn, marks, window.month)
        result = MonthResult(window.month, {n: _count(conn, t, c) for n, (t, c) in removing.items()}, openings)
        if dry_run:
            tx.rollback()
            return result
        progress(f"{window.month}: writing {sum(result.rows.values())} rows to {directory}")
        where, digest, written = write_month(directory, window.month, {
            name: partial(_stream, conn, table, clauses) for name, (table, clauses) in removing.items()}, openings)
        result.directory, result.rows = str(where), written
        before_removal(window.month)
        carry_prepaid(conn, marks, window.end)
        for name in REMOVAL_ORDER:
            table, clauses = removing[name]
            removed = remove_month(conn, table, window.month, clauses)
            if removed != written[name]:
                raise ArchiveRefused(f"{window.month}: {name} removed {removed} rows, the file holds "
                                     f"{written[name]}: nothing archived")
        marks.drop()
        _record(conn, window, openings, actor, clock, str(where), digest, result)
    return result


def _count(conn, table, clauses) -> int:
    return sum(conn.execute(select(func.count()).select_from(table).where(c)).scalar_one() for c in clauses)


def _stream(conn, table, clauses) -> Iterator[dict]:
    """The rows, in key order, from a server-side cursor (PostgreSQL) a batch at a time."""
    key = list(table.primary_key.columns)
    for clause in clauses:
        rows = conn.execute(select(table).where(clause).order_by(*key).execution_options(yield_per=STREAM_BATCH))
        for r in rows.mappings():
            yield dict(r)


def _record(conn, window: Window, openings, actor, clock, where, digest, result: MonthResult) -> None:
    now = clock.now()
    if openings:
        conn.execute(insert(archive_openings), openings)
    conn.execute(insert(archived_months).values(month=window.month, cutoff=window.end, archived_at=now, actor=actor,
                                                directory=where, manifest_sha256=digest,
                                                rows=sum(result.rows.values())))
    write_audit(conn, [audit_row(now, actor, "archive_month", "month", window.month, rows=result.rows,
                                 directory=where, manifest_sha256=digest)])
