"""Reconciliation's tables (declared on ``ledger.schema.metadata``; migration 0003, branch ``recon``).

- ``recon_runs``: one per reconciled file: a bank transaction file (docs/spec/INTERFACE.md §7.1, one per bank and business
  date) or a finance statement (§7.3). Totals of both sides and of what matched are columns; matched
  lines are NOT stored one by one (a bank file has up to millions): their count and sum are, per
  channel in ``details``, and the file itself (its SHA-256 is kept) reproduces them.
- ``recon_items``: every exception of a run (and, for a finance run, every statement entry: matched
  or not), with its state: open, matched (automatically or by hand), resolved (with the operator's
  resolution and note).
- ``recon_matches`` / ``recon_match_members``: a match groups items, payments, bank runs (a bank's
  daily remittance is matched to the bank's run for that date: one credit to many payments) and
  refunds (a statement debit that paid one out). A
  manual match can be undone (``undone_at``); rows are never deleted.
- ``recon_drop_files``: files taken from the drop directory, by SHA-256, so a file is processed once.
"""
from __future__ import annotations

from sqlalchemy import Column, Date, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, text

from ledger.schema import Id, Money, Ts, _id, metadata

recon_runs = Table(
    "recon_runs", metadata,
    _id("run_id"),
    Column("kind", String(10), nullable=False),             # bank | finance
    Column("bank_code", String(11), nullable=True),         # bank runs
    Column("business_date", Date, nullable=True),           # bank runs
    Column("file_name", String(255), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("file_format", String(40), nullable=False),      # bank-7.1 | camt.053.001.08 | csv
    Column("lines", Integer, nullable=False),
    Column("bank_count", Integer, nullable=False),          # lines / entries on the file's side
    Column("bank_sum", Money, nullable=False),              # bank: sum of S lines; finance: credits - debits
    Column("ledger_count", Integer, nullable=False),
    Column("ledger_sum", Money, nullable=False),            # bank: sum of the ledger's unreversed payments
    Column("matched_count", Integer, nullable=False),
    Column("matched_sum", Money, nullable=False),           # bank: matched lines with status S
    Column("exception_count", Integer, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("started_at", Ts, nullable=False),
    Column("finished_at", Ts, nullable=False),
    Column("details", Text, nullable=False, server_default="{}"),   # JSON: per-channel totals, timings, rules
    UniqueConstraint("kind", "file_sha256", name="uq_recon_runs_file"),
    Index(None, "business_date", "bank_code"),
)

recon_items = Table(
    "recon_items", metadata,
    _id("item_id"),
    Column("run_id", Id, ForeignKey("recon_runs.run_id"), nullable=False),
    Column("kind", String(20), nullable=False),
    # bank runs: bank_only | ledger_only | amount_differs | status_differs | debit_unknown
    # finance runs: remittance | cheque | credit | debit | reversal
    Column("status", String(10), nullable=False),           # open | matched | resolved
    Column("bank_code", String(11), nullable=True),
    Column("business_date", Date, nullable=True),           # bank runs: the file's; finance: booking date
    Column("channel", String(1), nullable=True),
    Column("rrn", String(12), nullable=True),
    Column("customer_no", String(20), nullable=True),
    Column("bank_amount", Money, nullable=True),            # the file's side (bank line / statement entry)
    Column("ledger_amount", Money, nullable=True),
    Column("bank_status", String(1), nullable=True),        # S | R (None: absent from the bank file)
    Column("ledger_status", String(1), nullable=True),      # S | R | U (debit with unknown outcome)
    Column("payment_id", Id, ForeignKey("payments.payment_id"), nullable=True),
    Column("debit_id", Id, ForeignKey("debits.debit_id"), nullable=True),
    Column("line_no", Integer, nullable=True),
    Column("transmitted", String(14), nullable=True),       # bank line: YYYYMMDDhhmmss
    Column("stan", String(6), nullable=True),
    Column("terminal", String(20), nullable=True),          # bank line: terminal id or approval code
    Column("direction", String(1), nullable=True),          # finance: C | D
    Column("reversal", String(1), nullable=True),           # finance: Y when RvslInd
    Column("method", String(2), nullable=True),
    Column("cheque_no", String(35), nullable=True),
    Column("reference", String(140), nullable=True),
    Column("entry_ref", String(70), nullable=True),        # finance: the bank's own entry reference (AcctSvcrRef)
    Column("counterparty", String(140), nullable=True),
    # finance: the bank run a remittance credit claims, set when it is stored (0017)
    Column("remits_run_id", Id, ForeignKey("recon_runs.run_id"), nullable=True),
    Column("value_date", Date, nullable=True),
    Column("detail", String(400), nullable=False, server_default=""),
    Column("resolution", String(20), nullable=True),        # posted | reversed | settled | accepted
    Column("resolved_by", String(64), nullable=True),
    Column("resolved_at", Ts, nullable=True),
    Column("note", String(200), nullable=True),
    Column("created_at", Ts, nullable=False),
    Index(None, "run_id"),
    Index(None, "status", "bank_code", "business_date"),
    Index(None, "payment_id"),
    Index(None, "remits_run_id"),
    # the archive's removal of a debit checks this foreign key (0022)
    Index(None, "debit_id", postgresql_where=text("debit_id IS NOT NULL"),
          sqlite_where=text("debit_id IS NOT NULL")),
)

recon_matches = Table(
    "recon_matches", metadata,
    _id("match_id"),
    Column("kind", String(10), nullable=False),             # auto | manual
    Column("created_by", String(64), nullable=False),
    Column("created_at", Ts, nullable=False),
    Column("note", String(200), nullable=False, server_default=""),
    Column("undone_by", String(64), nullable=True),
    Column("undone_at", Ts, nullable=True),
)

recon_match_members = Table(
    "recon_match_members", metadata,
    _id(),
    Column("match_id", Id, ForeignKey("recon_matches.match_id"), nullable=False),
    Column("item_id", Id, ForeignKey("recon_items.item_id"), nullable=True),
    Column("payment_id", Id, ForeignKey("payments.payment_id"), nullable=True),
    Column("run_id", Id, ForeignKey("recon_runs.run_id"), nullable=True),   # a bank run as a whole
    Column("refund_id", Id, ForeignKey("refunds.id"), nullable=True),       # a refund a statement debit paid out (0014)
    Column("side", String(10), nullable=False),             # file | ledger
    Column("amount", Money, nullable=False),
    Index(None, "match_id"),
    Index(None, "item_id"),
    Index(None, "payment_id"),
    Index(None, "refund_id"),
    # the archive's removal of a bank run checks this foreign key (0022)
    Index(None, "run_id", postgresql_where=text("run_id IS NOT NULL"), sqlite_where=text("run_id IS NOT NULL")),
)

recon_drop_files = Table(
    "recon_drop_files", metadata,
    _id(),
    Column("file_sha256", String(64), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("kind", String(20), nullable=False),             # bank | finance | debit_result | customers | bills | agreements | unknown
    Column("outcome", String(10), nullable=False),          # processed | rejected | duplicate
    Column("ref", String(40), nullable=False, server_default=""),   # run:<id> | import:<id>
    Column("detail", String(400), nullable=False, server_default=""),
    Column("processed_at", Ts, nullable=False),
    Index(None, "file_sha256"),
)

__all__ = ["recon_runs", "recon_items", "recon_matches", "recon_match_members", "recon_drop_files"]
