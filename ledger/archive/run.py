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

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import func, insert, select

from ledger.archive.files import write_month
from ledger.archive.remove import remove_month
from ledger.archive.selection import TABLES, TIES, Selection, Window, followers, select_month, where_in
from ledger.archive.tables import archive_openings, archived_months
from ledger.audit import audit_row, write_audit
from ledger.errors import Refused
from ledger.recon.remittances import attributed
from ledger.schema import audit_log, bills, journal_entries, outbox, payments, prepaid_movements

# deleted in this order: rows naming another before the row they name
REMOVAL_ORDER = ("journal_lines", "journal_entries", "billing_feed", "recon_match_members", "recon_matches",
                 "recon_items", "recon_drop_files", "recon_runs", "debit_bills", "debit_attempts", "allocations",
                 "prepaid_movements", "reversals", "payments", "debits", "bills", "outbox", "audit_log")
OPENING_KIND = "opening"


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
        selection = select_month(conn, window)
        parts = _parts(selection, window)
        rows = {name: _rows(conn, table, clauses) for name, (table, clauses) in parts.items()}
        parts["bills"] = _newest_bills_first(rows["bills"])
        openings, carried = _openings(window.month, rows, _remitted(conn, selection))
        result = MonthResult(window.month, {n: len(r) for n, r in rows.items()}, openings)
        if dry_run:
            tx.rollback()
            return result
        progress(f"{window.month}: writing {sum(result.rows.values())} rows to {directory}")
        where, digest = write_month(directory, window.month, rows, openings)
        result.directory = str(where)
        before_removal(window.month)
        for name in REMOVAL_ORDER:
            table, clauses = parts[name]
            removed = remove_month(conn, table, window.month, clauses)
            if removed != len(rows[name]):
                raise ArchiveRefused(f"{window.month}: {name} removed {removed} rows, the file holds "
                                     f"{len(rows[name])}: nothing archived")
        _record(conn, window, openings, carried, actor, clock, str(where), digest, result)
    return result


def _parts(selection: Selection, window: Window) -> dict[str, tuple]:
    """table name -> (table, clauses naming its rows that go)."""
    out = {"journal_entries": (journal_entries, where_in(journal_entries.c.entry_id, selection.ids["journal_entries"]))}
    for name, (key, _) in TIES.items():
        out[name] = (TABLES[name], where_in(TABLES[name].c[key], selection.ids[name]))
    return {**out, **followers(selection, window)}


def _newest_bills_first(bill_rows: list[dict]) -> tuple:
    """The bills' removal clauses, newest first: a correction's twin and replacement name the
    bill they correct, and go in an earlier (or the same) chunk."""
    ordered = [b["bill_id"] for b in sorted(bill_rows, key=lambda b: b["created_at"], reverse=True)]
    return bills, where_in(bills.c.bill_id, ordered)


def _rows(conn, table, clauses) -> list[dict]:
    key = [c.name for c in table.primary_key.columns]
    seen, out = set(), []
    for clause in clauses:
        for r in conn.execute(select(table).where(clause)).mappings():
            k = tuple(r[c] for c in key)
            if k not in seen:
                seen.add(k)
                out.append(dict(r))
    return sorted(out, key=lambda r: tuple(str(r[c]) for c in key))


def _remitted(conn, selection: Selection) -> dict[str, int]:
    """bank -> what reconciliation attributes of the removed statement credits to the bank's remittances
    (read before they go: what attributes them goes with them)."""
    out: dict[str, int] = defaultdict(int)
    removed = set(selection.ids["recon_items"])
    for item, banks in attributed(conn).items():
        if item in removed:
            for bank, fen in banks.items():
                out[bank] += fen
    return out


def _openings(month: str, rows: dict[str, list[dict]], remitted: dict[str, int]) -> tuple[list[dict], dict[str, int]]:
    """The figures the removed rows carry forward, and each customer's removed prepaid movements."""
    figures: dict[tuple[str, str], int] = defaultdict(int)
    for bank, fen in remitted.items():
        figures[("remitted", bank)] += fen
    for line in rows["journal_lines"]:
        figures[("account", line["account"])] += int(line["amount"])
    figures[("billed", "")] += sum(int(b["principal"]) + int(b["penalty"]) for b in rows["bills"])
    figures[("allocated", "")] += sum(int(a["amount"]) for a in rows["allocations"])
    bank_of = {p["payment_id"]: p["bank_code"] for p in rows["payments"]}
    for p in rows["payments"]:
        figures[("bank_paid", p["bank_code"])] += int(p["amount"])
    for r in rows["reversals"]:
        figures[("bank_paid", bank_of[r["payment_id"]])] -= int(r["amount"])
    figures[("feed_rows", "")] += len(rows["billing_feed"])
    carried: dict[str, int] = defaultdict(int)
    for m in rows["prepaid_movements"]:
        carried[m["customer_no"]] += int(m["amount"])
    openings = [{"month": month, "figure": f, "key": k, "amount": v} for (f, k), v in sorted(figures.items()) if v]
    return openings, {c: v for c, v in carried.items() if v}


def _record(conn, window: Window, openings, carried, actor, clock, where, digest, result: MonthResult) -> None:
    now = clock.now()
    if openings:
        conn.execute(insert(archive_openings), openings)
    if carried:
        conn.execute(insert(prepaid_movements), [
            {"customer_no": c, "amount": v, "kind": OPENING_KIND, "created_at": window.end} for c, v in sorted(carried.items())])
    conn.execute(insert(archived_months).values(month=window.month, cutoff=window.end, archived_at=now, actor=actor,
                                                directory=where, manifest_sha256=digest,
                                                rows=sum(result.rows.values())))
    write_audit(conn, [audit_row(now, actor, "archive_month", "month", window.month, rows=result.rows,
                                 directory=where, manifest_sha256=digest)])

