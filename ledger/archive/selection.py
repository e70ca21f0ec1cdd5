"""Which rows a month's archive removes: ``select_month(conn, window)``.

Rows dated before the month's end (timestamps before ``window.end``, business dates before
``window.next_date``) are candidates; a candidate goes only with everything it is tied to, so that
what remains still satisfies every per-row invariant of ``ledger verify`` and every foreign key:

- a bill, its allocations, the payments and reversals those came from, the payments' other
  allocations and prepaid movements, a bill's correction twin and replacement, a prepaid movement
  and the allocation it paid, a debit and its bills, and each of these rows' journal entries are
  tied together (a connected group; the ties are the columns in ``TIES``);
- reconciliation is tied in the same way: a bank run of the month and its items, an item and the
  payment or debit it names, a statement credit and the bank run it claims, a match and every row
  its members name, a statement's item and its remittance entries;
- a group stays whole when any of it must stay: a bill still open (not a reversing bill, not
  cancelled, allocated less than principal + penalty), a row dated after the month's end or tied
  to one, a row a table that is not archived names by a foreign key (the engines' debit
  reversals), a debit not in a final state, a reconciliation item still open (it keeps its run
  and what it names), a match naming a refund.

What else goes: the removed rows' journal lines, debit_bills and debit_attempts, the billing feed
rows naming a removed payment, reversal or movement, the drop directory's record of a removed
run's file; outbox notices sent or dead; the audit log (by UTC month, as it is partitioned). Finance runs (a statement's closed items
go one by one, with the bank runs and payments they are matched to), refunds, payout entries,
customers, agreements, bank requests and imports are not archived.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timezone

from sqlalchemy import String, cast, func, inspect, literal, select
from sqlalchemy import column as sql_column, table as sql_table

from ledger.archive.marks import Marks
from ledger.billing_feed.tables import billing_feed
from ledger.partitions import is_partition_name
from ledger.posting.money_out_kinds import ITEM
from ledger.recon_tables import recon_drop_files, recon_items, recon_match_members, recon_matches, recon_runs
from ledger.schema import (
    allocations, audit_log, bills, debit_attempts, debit_bills, debits, journal_entries, journal_lines, outbox,
    payments, prepaid_movements, reversals,
)

FINAL_DEBITS = ("approved", "declined", "reversed")
DONE_NOTICES = ("sent", "dead")
ENTRY_REFS = {"payment": "payments", "reversal": "reversals", "bill": "bills", "prepaid_movement": "prepaid_movements",
              ITEM: "recon_items"}
OPEN_ITEM = "open"

# table -> its key and the columns naming another archived table's row (the ties of a group)
TIES = {
    "allocations": ("id", {"bill_id": "bills", "correction_bill_id": "bills", "payment_id": "payments",
                           "reversal_id": "reversals", "prepaid_movement_id": "prepaid_movements"}),
    "prepaid_movements": ("id", {"payment_id": "payments", "reversal_id": "reversals", "bill_id": "bills"}),
    "reversals": ("reversal_id", {"payment_id": "payments"}),
    "payments": ("payment_id", {"debit_id": "debits"}),
    "bills": ("bill_id", {"reverses_bill_id": "bills", "replaces_bill_id": "bills"}),
    "debits": ("debit_id", {}),
    # a bank run's items are tied to it by ``_run_items`` (a statement's items are not: its run stays)
    "recon_items": ("item_id", {"payment_id": "payments", "debit_id": "debits", "remits_run_id": "recon_runs"}),
    "recon_runs": ("run_id", {}),
    "recon_matches": ("match_id", {}),
    "recon_match_members": ("id", {"match_id": "recon_matches", "item_id": "recon_items", "payment_id": "payments",
                                   "run_id": "recon_runs"}),
}
TABLES = {t.name: t for t in (allocations, prepaid_movements, reversals, payments, bills, debits, recon_items,
                              recon_runs, recon_matches, recon_match_members)}
# every table rows leave: what another of these names is taken care of by the ties and followers
ARCHIVED = {*TABLES, "journal_entries", "journal_lines", "debit_bills", "debit_attempts", "billing_feed", "outbox",
            "audit_log", "recon_drop_files"}


@dataclass(frozen=True)
class Window:
    month: str          # YYYY-MM
    end: datetime       # timestamps before it are the month's or older
    next_date: date     # business dates before it likewise


def keys() -> dict[str, object]:
    """table name -> its key column, for every table whose removed keys are marked (``Marks.go``)."""
    return {**{name: TABLES[name].c[key] for name, (key, _) in TIES.items()},
            "journal_entries": journal_entries.c.entry_id, "billing_feed": billing_feed.c.seq,
            "recon_drop_files": recon_drop_files.c.id}


def _candidate(table, window: Window):
    c = table.c
    if table is payments or table is reversals or table is journal_entries:
        return c.business_date < window.next_date
    if table is debits:
        return (c.created_at < window.end) & c.state.in_(FINAL_DEBITS)
    if table is recon_runs:
        return (c.kind == "bank") & (c.business_date < window.next_date)
    if table is recon_items:
        # closed items of the month: a bank run's, and a statement's one by one (the statement's run stays)
        return (c.status != OPEN_ITEM) & (c.business_date < window.next_date)
    if table is recon_match_members:
        return c.match_id.in_(select(recon_matches.c.match_id).where(_candidate(recon_matches, window)))
    return c.created_at < window.end


def select_month(conn, window: Window) -> Marks:
    """Mark the month's rows that go (``Marks.go``: one temporary table of keys per table)."""
    marks = Marks(conn, keys())
    for name, (key, tied) in TIES.items():
        table = TABLES[name]
        marks.add_nodes(name, table.c[key], _candidate(table, window))
        for column, target in tied.items():
            marks.add_ties(name, table.c[key], target, table.c[column], _candidate(table, window))
    je = journal_entries.c
    marks.add_nodes("journal_entries", je.entry_id, _candidate(journal_entries, window), je.ref_type.in_(ENTRY_REFS))
    for ref_type, target in ENTRY_REFS.items():
        marks.add_ties("journal_entries", je.entry_id, target, je.ref_id, _candidate(journal_entries, window),
                       je.ref_type == ref_type)
    marks.add_ties("debits", debit_bills.c.debit_id, "bills", debit_bills.c.bill_id,
                   debit_bills.c.debit_id.in_(_candidates(debits, window)))
    i = recon_items.c     # a bank run and its items, open or not: an open item keeps its run
    marks.add_ties("recon_runs", i.run_id, "recon_items", i.item_id, i.run_id.in_(_candidates(recon_runs, window)))
    marks.analyze()
    marks.keep_tied_to_others()
    _keep_by_newer_rows(marks, window)
    _keep_by_their_state(marks, window)
    marks.analyze()
    marks.spread()
    for name in (*TIES, "journal_entries"):
        marks.settle(name)
    _mark_feed_rows(marks, window)
    _mark_drop_files(marks)
    marks.analyze(*marks.go.values())
    return marks


def _mark_drop_files(marks: Marks) -> None:
    """The drop directory's records of the removed runs' files (``ref`` run:<id>)."""
    d = recon_drop_files.c
    marks.fill("recon_drop_files", d.id, d.ref.in_(select(literal("run:") + cast(marks.go["recon_runs"].c.k, String))))


def _mark_feed_rows(marks: Marks, window: Window) -> None:
    """The feed rows naming a removed payment, reversal or movement, dated up to the month's end."""
    f = billing_feed.c
    marks.fill("billing_feed", f.seq, f.business_date < window.next_date,
               f.payment_id.in_(marks.going("payments")) | f.reversal_id.in_(marks.going("reversals"))
               | f.prepaid_movement_id.in_(marks.going("prepaid_movements")))


def _keep_by_newer_rows(marks: Marks, window: Window) -> None:
    """Candidates that a row outside the candidates names stay."""
    for name, (key, tied) in TIES.items():
        table = TABLES[name]
        for column, target in tied.items():
            marks.keep(target, table.c[column], ~_candidate(table, window),
                       table.c[column].in_(_candidates(TABLES[target], window)))
    je = journal_entries.c
    for ref_type, target in ENTRY_REFS.items():
        key = TABLES[target].c[TIES[target][0]]
        marks.keep(target, je.ref_id, ~_candidate(journal_entries, window), je.ref_type == ref_type,
                   je.ref_id.in_(select(cast(key, String)).where(_candidate(TABLES[target], window))))
    db = debit_bills.c
    marks.keep("bills", db.bill_id, ~_candidate(debits, window), db.bill_id.in_(_candidates(bills, window)),
               select_from=debit_bills.join(debits))


def _candidates(table, window: Window):
    """SQL: the keys of ``table``'s candidates (an IN subquery, so that a check reads only what
    the month could remove, not the whole history)."""
    return select(table.c[TIES[table.name][0]]).where(_candidate(table, window))


def _keep_by_their_state(marks: Marks, window: Window) -> None:
    """Open bills, matches naming a refund (a statement debit that paid one out: refunds stay), and
    rows a table that is not archived names by a foreign key (the engines' debit reversals and file
    lines, ...): read from the database's own foreign keys, so that a table added later, in any
    area, keeps what it names."""
    _keep_open_bills(marks, window)
    mm = recon_match_members.c
    marks.keep("recon_matches", mm.match_id, mm.refund_id.is_not(None), _candidate(recon_match_members, window))
    found = inspect(marks.conn)
    for name in found.get_table_names():
        if name in ARCHIVED or is_partition_name(name):     # a partition is its table's storage
            continue
        for fk in found.get_foreign_keys(name):
            target = fk["referred_table"]
            if target in TIES and len(fk["constrained_columns"]) == 1:
                named = sql_column(fk["constrained_columns"][0])
                marks.keep(target, named, named.in_(_candidates(TABLES[target], window)),
                           select_from=sql_table(name, named))


def _keep_open_bills(marks: Marks, window: Window) -> None:
    """Candidate bills still owing stay: not reversing, not cancelled by a twin, allocated (all of
    it, whenever) short of principal + penalty."""
    a, b = allocations.c, bills.c
    twin = bills.alias("twin")
    allocated = (select(a.bill_id, func.sum(a.amount).label("s")).where(a.bill_id.in_(_candidates(bills, window)))
                 .group_by(a.bill_id).subquery())
    owing = b.principal + b.penalty - func.coalesce(allocated.c.s, 0)
    marks.keep("bills", b.bill_id, _candidate(bills, window), b.kind != "R", twin.c.bill_id.is_(None), owing != 0,
               select_from=bills.outerjoin(allocated, allocated.c.bill_id == b.bill_id)
               .outerjoin(twin, twin.c.reverses_bill_id == b.bill_id))


def parts(marks: Marks, window: Window) -> dict[str, tuple]:
    """table name -> (table, [where clauses]) of every table's rows that go: the marked rows; lines of
    removed entries, a removed debit's bills and attempts; notices sent or dead, the audit log,
    before the month's end."""
    out = {name: ({**TABLES, **_FOLLOWING}[name], [key.in_(marks.going(name))]) for name, key in keys().items()}
    return {**out,
            # by the month too: its lines are dated as their entries, so PostgreSQL reads the month's partitions only
            "journal_lines": (journal_lines, [(journal_lines.c.business_date < window.next_date)
                                              & journal_lines.c.entry_id.in_(marks.going("journal_entries"))]),
            "debit_bills": (debit_bills, [debit_bills.c.debit_id.in_(marks.going("debits"))]),
            "debit_attempts": (debit_attempts, [debit_attempts.c.debit_id.in_(marks.going("debits"))]),
            "outbox": (outbox, [(outbox.c.created_at < window.end) & outbox.c.state.in_(DONE_NOTICES)]),
            # by UTC month, as its partitions are: a month's partition can then go whole
            "audit_log": (audit_log, [audit_log.c.at < datetime.combine(window.next_date, time(), timezone.utc)])}


_FOLLOWING = {"journal_entries": journal_entries, "billing_feed": billing_feed, "recon_drop_files": recon_drop_files}
