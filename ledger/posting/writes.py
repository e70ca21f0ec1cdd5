"""Writing what a posting batch decided, and the one journal writer.

``flush`` reserves the batch's ids, then sends one multi-row insert per table (in foreign keys'
order), all together (``runtime.bulk_sql.Writes``: one round trip on PostgreSQL); the billing
feed's rows last, numbered from its counter in the same statement.

Journal entries are written here only: ``journal_rows`` makes a batch's entries and lines (and
refuses an unbalanced one, ``ledger.journal.UnbalancedEntry``); ``BillJournal`` is its bulk form
for an import's new bills (rows at COPY speed, tens of thousands at a time).
"""
from __future__ import annotations

import json
from datetime import datetime

from config import notices
from ledger.audit import audit_row
from ledger.billing_feed.tables import billing_feed, billing_feed_counter
from ledger.ids import reserve_ids_for_bulk, reserve_ids_many
from ledger.journal import PENALTY_INCOME, RECEIVABLE, REVENUE, Entry
from ledger.posting.feed import feed_rows
from ledger.posting.kinds import PAYMENT_CODE
from ledger.posting.model import Result, resolved
from runtime.bulk_sql import RowWriter, Writes
from ledger.schema import (
    allocations, audit_log, bank_requests, debit_attempts, debits, journal_entries, journal_lines, orphan_reversals,
    outbox, payments, prepaid_movements, request_rrns, reversals,
)


def flush(batch, writes: Writes | None = None) -> None:
    """Reserve ids, then one multi-row insert per table (foreign keys' order), all sent together.
    With ``writes``, the rows join the caller's writes instead, sent by its ``flush()`` (after rows
    of its own: the billing feed's numbered rows still go last)."""
    now, rows = batch.now, batch.rows
    owners = ((payments, "payment_id", "payments"), (reversals, "reversal_id", "reversals"),
              (prepaid_movements, "id", "prepaid_movements"))
    *row_ids, entry_ids = reserve_ids_many(batch.conn, [(table, len(rows[name])) for table, _, name in owners]
                                           + [(journal_entries, len(batch.entries))])
    for (_, key, name), ids in zip(owners, row_ids):
        for row, new_id in zip(rows[name], ids):
            row[key].id = new_id
    for row in rows["payments"]:
        row["receipt_no"] = row["receipt_no"].receipt_no()
    sending, writes = writes is None, writes or Writes(batch.conn)
    for name, table in (("payments", payments), ("reversals", reversals), ("prepaid_movements", prepaid_movements),
                        ("allocations", allocations)):
        writes.insert(table, [{k: resolved(v) for k, v in row.items()} for row in rows[name]])
    entry_rows, line_rows = journal_rows(batch.entries, entry_ids, now)
    writes.insert(journal_entries, entry_rows)
    writes.insert(journal_lines, line_rows)
    out = []
    for cust, kind, prefix, ref, sms in batch.notices:
        row = notices.outbox_row(cust.customer_no, cust.mobile, kind, f"{prefix}:{resolved(ref)}", sms, now)
        if row is not None:
            out.append(row)
    writes.insert(outbox, out)
    writes.insert(audit_log, [audit_row(now, actor, action, otype, resolved(ref),
                                        reason=details.pop("reason", "") or "",
                                        **{k: resolved(v) for k, v in details.items()})
                              for actor, action, otype, ref, details in rows["audit"]])
    writes.insert(bank_requests, [{
        "bank_code": ident[0], "id_year": ident[1], "transmitted": ident[2], "stan": ident[3],
        "mti": p.mti, "processing_code": PAYMENT_CODE, "content_digest": p.digest,
        "response_code": res.code, "response_fields": stored_answer(res), "received_at": p.received_at}
        for ident, p, res in batch.new_requests])
    writes.insert(request_rrns, rows["request_rrns"])
    writes.insert(orphan_reversals, rows["orphans"])
    # the history before the state: its foreign-key check finds the debit row under this
    # transaction's FOR UPDATE lock; after the update it would lock the new row version again
    writes.insert(debit_attempts, rows["debit_attempts"])
    writes.update(debits, "debit_id", rows["debit_updates"])
    # last: the billing feed's rows, numbered from its counter row, whose lock is then held to the
    # COMMIT - the shortest time, and so numbers commit in their order (docs/billing-feed.md).
    # A batch that moved no money has none and takes no lock.
    writes.numbered(billing_feed, feed_rows(rows["billing_feed"]), "seq", billing_feed_counter, "last_seq")
    if sending:
        writes.flush()


def journal_rows(entries: list[tuple], entry_ids: list[int], created_at: datetime) -> tuple[list, list]:
    """The rows of journal entries ``(kind, ref_type, ref, business_date, actor, lines)`` whose lines
    are ``(account, fen, customer_no)``, debits positive, with their reserved ids. Raises
    ``UnbalancedEntry`` for an entry whose lines do not sum to 0."""
    entry_rows, line_rows = [], []
    for entry_id, (kind, ref_type, ref, bd, actor, lines) in zip(entry_ids, entries):
        e = Entry(kind, ref_type, str(resolved(ref)), bd, actor)
        for account, amount, cust in lines:
            e.debit(account, amount, cust)
        entry_rows.append({"entry_id": entry_id, **e.entry_row(created_at)})   # entry_row checks the balance
        line_rows.extend(e.line_rows(entry_id))
    return entry_rows, line_rows


def bill_lines(principal: int, penalty: int, customer_no: str) -> list[tuple]:
    """A bill's journal lines: Dr receivable; Cr revenue, Cr penalty income. A reversing bill's
    negative amounts make the mirror image."""
    return [(RECEIVABLE, principal + penalty, customer_no), (REVENUE, -principal, customer_no),
            (PENALTY_INCOME, -penalty, customer_no)]


class BillJournal:
    """The journal entries of an import's new bills (kind ``bill``, as ``bill_lines`` makes them), in
    the bulk writer's form: values as the database takes them, COPY on PostgreSQL."""

    def __init__(self, conn):
        self.conn = conn
        self.entries = RowWriter(conn, journal_entries, ("entry_id", "business_date", "kind", "ref_type", "ref_id",
                                                         "actor", "created_at"))
        self.lines = RowWriter(conn, journal_lines, ("entry_id", "business_date", "account", "amount",
                                                     "customer_no"))

    def write(self, new: list[tuple], day, actor: str, at) -> None:
        """new: an import's bills as it reads them, (customer_no, period, bill_id, principal, penalty,
        due date, category); day and at as the database takes them. Balanced by construction:
        receivable is revenue plus penalty income."""
        ids = reserve_ids_for_bulk(self.conn, journal_entries, len(new))
        self.entries.write([(entry_id, day, "bill", "bill", v[2], actor, at) for entry_id, v in zip(ids, new)])
        lines = []
        for entry_id, (no, _, _, principal, penalty, _, _) in zip(ids, new):
            lines.append((entry_id, day, RECEIVABLE, principal + penalty, no))
            lines.append((entry_id, day, REVENUE, -principal, no))
            if penalty:
                lines.append((entry_id, day, PENALTY_INCOME, -penalty, no))
        self.lines.write(lines)


def stored_answer(res: Result) -> str:
    """A request's answer as bank_requests keeps it, for its repeats."""
    fields = dict(res.final_fields())
    if res.detail:
        fields["ER"] = res.detail
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str)
