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
run's file; outbox notices sent or dead; the audit log. Finance runs (a statement's closed
items go one by one, with the bank runs and payments they are matched to), refunds, payout entries, customers, agreements,
bank requests and imports are not archived.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import String, cast, func, inspect, select
from sqlalchemy import column as sql_column, table as sql_table

from ledger.billing_feed.tables import billing_feed
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


@dataclass
class Selection:
    """Ids removed per table (``journal_lines``, ``debit_bills`` etc. follow their parents)."""
    ids: dict[str, list] = field(default_factory=dict)

    def count(self) -> int:
        return sum(len(v) for v in self.ids.values())


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


class _Groups:
    """Union-find over (table, key); a root marked kept keeps its whole group."""

    def __init__(self):
        self.parent: dict = {}
        self.kept: set = set()

    def find(self, node):
        self.parent.setdefault(node, node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def tie(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb
            if ra in self.kept:
                self.kept.add(rb)

    def keep(self, node) -> None:
        self.kept.add(self.find(node))

    def goes(self, node) -> bool:
        return self.find(node) not in self.kept


def select_month(conn, window: Window) -> Selection:
    groups = _Groups()
    candidates: dict[str, set] = {}
    for name, (key, ties) in TIES.items():
        table = TABLES[name]
        cols = [table.c[key], *(table.c[t] for t in ties)]
        rows = conn.execute(select(*cols).where(_candidate(table, window))).all()
        candidates[name] = {r[0] for r in rows}
        for r in rows:
            groups.find((name, r[0]))
            for value, target in zip(r[1:], ties.values()):
                if value is not None:
                    groups.tie((name, r[0]), (target, value))
    entries = conn.execute(select(journal_entries.c.entry_id, journal_entries.c.ref_type, journal_entries.c.ref_id)
                           .where(_candidate(journal_entries, window),
                                  journal_entries.c.ref_type.in_(ENTRY_REFS))).all()
    candidates["journal_entries"] = {e.entry_id for e in entries}
    for debit_id, bill_id in conn.execute(select(debit_bills.c.debit_id, debit_bills.c.bill_id)
                                          .where(debit_bills.c.debit_id.in_(_candidates(debits, window)))):
        groups.tie(("debits", debit_id), ("bills", bill_id))
    for item_id, run_id in _run_items(conn, window):
        groups.tie(("recon_items", item_id), ("recon_runs", run_id))
    for e in entries:
        target = ENTRY_REFS[e.ref_type]
        ref = e.ref_id if target == "bills" else int(e.ref_id)
        groups.tie(("journal_entries", e.entry_id), (target, ref))
    # a tie to a row that is not a candidate (newer, or not final) keeps the group
    for node in list(groups.parent):
        if node[1] not in candidates.get(node[0], ()):
            groups.keep(node)
    for node in _kept_by_newer_rows(conn, window) + _kept_by_their_state(conn, window):
        groups.keep(node)
    selection = Selection({name: sorted(k for k in keys if groups.goes((name, k))) for name, keys in candidates.items()})
    selection.ids["billing_feed"] = _feed_rows(conn, selection, window)
    selection.ids["recon_drop_files"] = _drop_files(conn, selection)
    return selection


def _run_items(conn, window: Window):
    """(item_id, run_id) of every item of the month's bank runs: an item not a candidate (open)
    then keeps its run."""
    i = recon_items.c
    return conn.execute(select(i.item_id, i.run_id).where(i.run_id.in_(_candidates(recon_runs, window)))).all()


def _drop_files(conn, selection: Selection) -> list[int]:
    """The drop directory's records of the removed runs' files (``ref`` run:<id>)."""
    refs = [f"run:{r}" for r in selection.ids["recon_runs"]]
    return sorted(i for clause in where_in(recon_drop_files.c.ref, refs)
                  for i in conn.execute(select(recon_drop_files.c.id).where(clause)).scalars())


def _feed_rows(conn, selection: Selection, window: Window) -> list[int]:
    """The seqs of the feed rows naming a removed payment, reversal or movement: one read of the feed's
    rows dated up to the month's end (the feed has no index on what it names: posting does not need one)."""
    named = {"payment_id": set(selection.ids["payments"]), "reversal_id": set(selection.ids["reversals"]),
             "prepaid_movement_id": set(selection.ids["prepaid_movements"])}
    f = billing_feed.c
    rows = conn.execute(select(f.seq, f.payment_id, f.reversal_id, f.prepaid_movement_id)
                        .where(f.business_date < window.next_date))
    return sorted(r.seq for r in rows if any(r._mapping[c] in ids for c, ids in named.items()))


def _kept_by_newer_rows(conn, window: Window) -> list[tuple]:
    """(table, key) of candidates that a row outside the candidates names."""
    out = []
    for name, (key, ties) in TIES.items():
        table = TABLES[name]
        for column, target in ties.items():
            for (value,) in conn.execute(select(table.c[column]).distinct()
                                         .where(~_candidate(table, window), table.c[column].is_not(None))
                                         .where(table.c[column].in_(_candidates(TABLES[target], window)))):
                out.append((target, value))
    je = journal_entries.c
    for ref_type, target in ENTRY_REFS.items():
        key = TABLES[target].c[TIES[target][0]]
        for (ref,) in conn.execute(select(je.ref_id).distinct()
                                   .where(~_candidate(journal_entries, window), je.ref_type == ref_type)
                                   .where(je.ref_id.in_(select(cast(key, String))
                                                        .where(_candidate(TABLES[target], window))))):
            out.append((target, ref if target == "bills" else int(ref)))
    db = debit_bills.c
    for (bill_id,) in conn.execute(select(db.bill_id).distinct().select_from(debit_bills.join(debits))
                                   .where(~_candidate(debits, window), db.bill_id.in_(_candidates(bills, window)))):
        out.append(("bills", bill_id))
    return out


def _candidates(table, window: Window):
    """SQL: the keys of ``table``'s candidates (an IN subquery, so that a check reads only what
    the month could remove, not the whole history)."""
    return select(table.c[TIES[table.name][0]]).where(_candidate(table, window))


def _kept_by_their_state(conn, window: Window) -> list[tuple]:
    """Open bills, and rows a table that is not archived names by a foreign key (reconciliation's
    payments and debits, the engines' debit reversals and file lines, ...): read from the database's
    own foreign keys, so that a table added later, in any area, keeps what it names."""
    out = [("bills", b) for b in _open_bills(conn, window)]
    mm = recon_match_members.c      # a statement debit matched to a refund (refunds stay)
    out += [("recon_matches", m) for m in conn.execute(
        select(mm.match_id).distinct().where(mm.refund_id.is_not(None), _candidate(recon_match_members, window)))
        .scalars()]
    found = inspect(conn)
    for name in found.get_table_names():
        if name in ARCHIVED:
            continue
        for fk in found.get_foreign_keys(name):
            target = fk["referred_table"]
            if target in TIES and len(fk["constrained_columns"]) == 1:
                named = sql_column(fk["constrained_columns"][0])
                out += [(target, v) for (v,) in conn.execute(
                    select(named).distinct().select_from(sql_table(name, named))
                    .where(named.in_(_candidates(TABLES[target], window))))]
    return out


def _open_bills(conn, window: Window) -> list[str]:
    """Candidate bills still owing: not reversing, not cancelled by a twin, allocated (all of it,
    whenever) short of principal + penalty."""
    a, b = allocations.c, bills.c
    twin = bills.alias("twin")
    allocated = (select(a.bill_id, func.sum(a.amount).label("s")).where(a.bill_id.in_(_candidates(bills, window)))
                 .group_by(a.bill_id).subquery())
    owing = b.principal + b.penalty - func.coalesce(allocated.c.s, 0)
    return list(conn.execute(
        select(b.bill_id).select_from(bills.outerjoin(allocated, allocated.c.bill_id == b.bill_id)
                                      .outerjoin(twin, twin.c.reverses_bill_id == b.bill_id))
        .where(_candidate(bills, window), b.kind != "R", twin.c.bill_id.is_(None), owing != 0)).scalars())


CHUNK = 5000    # ids per IN list (SQLite's and Oracle's limits on bound parameters)


def chunks(ids: list) -> list[list]:
    return [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)] or [[]]


def where_in(column, ids: list) -> list:
    """``column IN ids`` as clauses of at most CHUNK ids each."""
    return [column.in_(part) for part in chunks(ids)]


def followers(selection: Selection, window: Window) -> dict[str, tuple]:
    """table name -> (table, [where clauses]) of the rows that go with the selection: lines of removed
    entries, a removed debit's bills and attempts, feed rows of removed changes; notices sent or dead,
    the audit log, before the month's end."""
    ids, feed = selection.ids, billing_feed.c
    return {
        "journal_lines": (journal_lines, where_in(journal_lines.c.entry_id, ids.get("journal_entries", []))),
        "debit_bills": (debit_bills, where_in(debit_bills.c.debit_id, ids.get("debits", []))),
        "debit_attempts": (debit_attempts, where_in(debit_attempts.c.debit_id, ids.get("debits", []))),
        "billing_feed": (billing_feed, where_in(feed.seq, ids.get("billing_feed", []))),
        "recon_drop_files": (recon_drop_files, where_in(recon_drop_files.c.id, ids.get("recon_drop_files", []))),
        "outbox": (outbox, [(outbox.c.created_at < window.end) & outbox.c.state.in_(DONE_NOTICES)]),
        "audit_log": (audit_log, [audit_log.c.at < window.end]),
    }
