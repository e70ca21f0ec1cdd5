"""The receivables ledger's tables (SQLAlchemy Core).

Money is integer fen in BigInteger columns. Records of money and of customer-visible facts
are append-only: a bill correction adds a reversing bill and a replacement bill; a payment
reversal adds a reversal row, negative allocations and a reversing journal entry. Current
positions (what a bill still owes, a customer's prepaid balance) are sums over those rows.
The only tables whose rows change are master data (customers, agreements: each change is
also written to ``audit_log``) and operational queues (debit state, outbox delivery state).

Chart of accounts (journal_lines.account); debits positive, credits negative, every entry sums to 0:
  receivable            asset      what customers owe on bills (principal + penalty)
  bank_clearing:<bank>  asset      collected by a bank, not yet remitted to the utility
  revenue               income     electricity billed (principal)
  penalty_income        income     late-payment penalties billed
  prepaid               liability  customers' prepaid balances
  refunds_payable       liability  approved refunds not yet paid out
"""
from __future__ import annotations

from sqlalchemy.dialects import oracle
from sqlalchemy import (
    BigInteger, CheckConstraint, Column, Date, DateTime, ForeignKey, Identity, Index, Integer,
    MetaData, PrimaryKeyConstraint, String, Table, Text, UniqueConstraint, text,
)

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
})

# An autoincrementing 64-bit key on PostgreSQL and Oracle (identity column), a rowid alias on SQLite.
Id = BigInteger().with_variant(Integer, "sqlite")
Money = BigInteger
Ts = DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), "oracle")  # always UTC


def _id(name: str = "id") -> Column:
    return Column(name, Id, Identity(), primary_key=True)


banks = Table(
    "banks", metadata,
    Column("bank_code", String(11), primary_key=True),
    Column("name", String(100), nullable=False, server_default=""),
    Column("created_at", Ts, nullable=False),
)

customers = Table(
    "customers", metadata,
    Column("customer_no", String(20), primary_key=True),
    Column("customer_name", String(120), nullable=False),
    Column("customer_type", String(1), nullable=False),   # R resident, N non-resident
    Column("status", String(1), nullable=False),          # A active, S suspended, C closed
    Column("prepay_allowed", String(1), nullable=False),  # Y / N
    Column("mobile", String(11), nullable=True),
    Column("district", String(20), nullable=True),        # the district office (debit plans, reports)
    # C cash at counters, B the bank withholds, D debited under an agreement; NULL: not given by the
    # billing system, D while the customer has an active agreement, else C (config.notices)
    Column("collection_type", String(1), nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Ts, nullable=False),
    CheckConstraint("customer_type in ('R','N')", name="type"),
    CheckConstraint("status in ('A','S','C')", name="status"),
    CheckConstraint("prepay_allowed in ('Y','N')", name="prepay"),
    CheckConstraint("collection_type in ('C','B','D')", name="collection_type"),
)

customer_history = Table(  # every version a customer row has had, the first included
    "customer_history", metadata,
    _id(),
    Column("customer_no", String(20), ForeignKey("customers.customer_no"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("customer_name", String(120), nullable=False),
    Column("customer_type", String(1), nullable=False),
    Column("status", String(1), nullable=False),
    Column("prepay_allowed", String(1), nullable=False),
    Column("mobile", String(11), nullable=True),
    Column("district", String(20), nullable=True),
    Column("collection_type", String(1), nullable=True),
    Column("import_id", Id, ForeignKey("imports.id"), nullable=True),
    Column("recorded_at", Ts, nullable=False),
    UniqueConstraint("customer_no", "version", name="uq_customer_history_version"),
)

imports = Table(
    "imports", metadata,
    _id(),
    Column("kind", String(20), nullable=False),           # customers | bills | agreements
    Column("file_name", String(255), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("lines", Integer, nullable=False),
    Column("applied", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("imported_at", Ts, nullable=False),
)

bills = Table(
    "bills", metadata,
    Column("bill_id", String(32), primary_key=True),
    Column("customer_no", String(20), ForeignKey("customers.customer_no"), nullable=False),
    Column("period", String(6), nullable=False),          # YYYYMM
    Column("principal", Money, nullable=False),           # negative on a reversing bill
    Column("penalty", Money, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("kind", String(1), nullable=False),            # O original, R reversing, N replacement (new)
    Column("reverses_bill_id", String(32), ForeignKey("bills.bill_id"), nullable=True, unique=True),
    Column("replaces_bill_id", String(32), ForeignKey("bills.bill_id"), nullable=True),
    Column("import_id", Id, ForeignKey("imports.id"), nullable=True),
    Column("created_at", Ts, nullable=False),
    # E electricity charges (电费), V charges for irregular use (违约用电电费), F penalties for illegal
    # use (违章追罚电费); a correction's bills keep the category of the bill they correct
    Column("category", String(1), nullable=False, server_default="E"),
    CheckConstraint("kind in ('O','R','N')", name="kind"),
    CheckConstraint("(kind = 'R' and reverses_bill_id is not null) or (kind <> 'R' and reverses_bill_id is null)",
                    name="reversing"),
    CheckConstraint("category in ('E','V','F')", name="category"),
    Index(None, "customer_no", "period"),
    Index(None, "period", "category"),   # month-end reports: a period's bills by category
    Index(None, "replaces_bill_id"),     # a bill's correction history (the API's customer look-up)
    Index(None, "due_date"),             # the overdue reminders' bills of a reminder day (ledger/reminders.py)
)

agreements = Table(  # direct-debit agreements; at most one active per customer (enforced in code + history)
    "agreements", metadata,
    _id(),
    Column("customer_no", String(20), ForeignKey("customers.customer_no"), nullable=False),
    Column("bank_code", String(11), ForeignKey("banks.bank_code"), nullable=False),
    Column("account_no", String(28), nullable=False),
    Column("account_name", String(120), nullable=False),
    Column("status", String(1), nullable=False),          # A active, C cancelled
    Column("debit_limit", Money, nullable=False),         # 0 = no limit
    Column("version", Integer, nullable=False),
    Column("updated_at", Ts, nullable=False),
    UniqueConstraint("customer_no", "bank_code", "account_no", name="uq_agreements_account"),
    Index(None, "customer_no", "status"),
)

business_day_closures = Table(  # a bank's business date is closed when its file is reconciled
    "business_day_closures", metadata,
    Column("bank_code", String(11), ForeignKey("banks.bank_code"), primary_key=True),
    Column("business_date", Date, primary_key=True),
    Column("closed_at", Ts, nullable=False),
    Column("closed_by", String(64), nullable=False),
    Column("recon_run_id", Id, nullable=True),
)

bank_requests = Table(  # every financial request answered, for duplicate replay (docs/spec/INTERFACE.md §4.7)
    "bank_requests", metadata,
    _id(),
    Column("bank_code", String(11), nullable=False),      # field 32
    Column("id_year", Integer, nullable=False),           # field 7 has no year: the year it was received in
    Column("transmitted", String(10), nullable=False),    # field 7 MMDDhhmmss
    Column("stan", String(6), nullable=False),            # field 11
    Column("mti", String(4), nullable=False),
    Column("processing_code", String(6), nullable=False),
    Column("content_digest", String(64), nullable=False), # of the fields that define the request
    Column("response_code", String(2), nullable=False),
    Column("response_fields", Text, nullable=False),      # JSON of the response's fields, for replay
    Column("received_at", Ts, nullable=False),
    # the most selective column first: a lookup stays on this index with or without statistics (0005)
    UniqueConstraint("stan", "transmitted", "bank_code", "id_year", name="uq_bank_requests_identity"),
)

request_rrns = Table(  # the RRN (field 37) of every financial request recorded, and whose it is (§4.7)
    "request_rrns", metadata,
    Column("rrn", String(12), nullable=False),
    Column("business_date", Date, nullable=False),        # the business date it arrived on
    Column("bank_code", String(11), nullable=False),      # field 32
    # the payment it belongs to, by the identity the bank gave it: a payment's own; for a reversal
    # of the bank's own payment, the original's (field 90), as a reversal may carry its RRN
    Column("id_year", Integer, nullable=False),
    Column("transmitted", String(10), nullable=False),
    Column("stan", String(6), nullable=False),
    # the most selective column first, as in every identity index (0005)
    PrimaryKeyConstraint("rrn", "business_date", "bank_code"),
)

payments = Table(
    "payments", metadata,
    _id("payment_id"),
    Column("channel", String(1), nullable=False),         # C counter, D direct debit
    Column("bank_code", String(11), ForeignKey("banks.bank_code"), nullable=False),
    Column("customer_no", String(20), ForeignKey("customers.customer_no"), nullable=False),
    Column("id_year", Integer, nullable=False),
    Column("transmitted", String(10), nullable=False),    # field 7 of the paying request
    Column("stan", String(6), nullable=False),            # field 11
    Column("rrn", String(12), nullable=False),            # field 37
    Column("business_date", Date, nullable=False),
    Column("amount", Money, nullable=False),
    Column("method", String(2), nullable=False),          # 01 cash, 02 transfer/card, 03 cheque, 10 direct debit
    Column("cheque_no", String(20), nullable=True),
    Column("receipt_no", String(20), nullable=False, unique=True),
    Column("terminal_id", String(8), nullable=True),
    Column("branch_id", String(15), nullable=True),
    Column("debit_id", Id, ForeignKey("debits.debit_id"), nullable=True, unique=True),
    Column("source", String(1), nullable=False, server_default="B"),  # B bank message, R reconciliation (补账)
    Column("created_at", Ts, nullable=False),
    CheckConstraint("amount > 0", name="amount"),
    # channel is part of the identity: on the debit channel fields 7/11 are the gateway's own, and may
    # coincide with those of a counter request from the same bank.
    # most selective column first (migration 0005), as in every identity index
    UniqueConstraint("stan", "transmitted", "bank_code", "channel", "id_year", name="uq_payments_identity"),
    UniqueConstraint("rrn", "business_date", "bank_code", "channel", name="uq_payments_rrn"),
    Index(None, "customer_no"),
    Index(None, "business_date", "bank_code"),
)

reversals = Table(  # one per reversed payment; the payment row itself is never changed
    "reversals", metadata,
    _id("reversal_id"),
    Column("payment_id", Id, ForeignKey("payments.payment_id"), nullable=False, unique=True),
    Column("bank_code", String(11), nullable=False),
    Column("id_year", Integer, nullable=True),            # identity of the reversal request, if a bank sent it
    Column("transmitted", String(10), nullable=True),
    Column("stan", String(6), nullable=True),
    Column("amount", Money, nullable=False),
    Column("business_date", Date, nullable=False),
    Column("source", String(1), nullable=False),          # B bank, R reconciliation, D debit outcome
    Column("reason", String(200), nullable=False, server_default=""),
    Column("created_at", Ts, nullable=False),
    CheckConstraint("amount > 0", name="amount"),
    Index(None, "business_date"),        # the day's reversals (the console's glance)
)

orphan_reversals = Table(  # a reversal whose original had not arrived: the original is declined with 12
    "orphan_reversals", metadata,
    _id(),
    Column("bank_code", String(11), nullable=False),      # original field 32, as a bank code
    Column("id_year", Integer, nullable=False),
    Column("orig_transmitted", String(10), nullable=False),
    Column("orig_stan", String(6), nullable=False),
    Column("amount", Money, nullable=False),
    Column("created_at", Ts, nullable=False),
    UniqueConstraint("orig_stan", "orig_transmitted", "bank_code", "id_year", name="uq_orphan_reversals_orig"),
)

allocations = Table(  # money applied to bills; a reversal adds the negative twin
    "allocations", metadata,
    _id(),
    Column("bill_id", String(32), ForeignKey("bills.bill_id"), nullable=False),
    Column("amount", Money, nullable=False),
    # payment, reversal and prepaid movement are inserted by the same flush: checked by
    # `ledger verify` (invariant 10), not by foreign keys (migration 0005 says why)
    Column("payment_id", Id, nullable=True),
    Column("reversal_id", Id, nullable=True),
    Column("prepaid_movement_id", Id, nullable=True),
    Column("correction_bill_id", String(32), ForeignKey("bills.bill_id"), nullable=True),
    Column("created_at", Ts, nullable=False),
    Index(None, "bill_id", "created_at", "amount"),   # a bill's allocations to a cut-off, summed from the index
    Index(None, "payment_id"),
    # a bill's removal (ledger/archive) checks its foreign key here; few allocations are a correction's (0021)
    Index(None, "correction_bill_id", postgresql_where=text("correction_bill_id IS NOT NULL"),
          sqlite_where=text("correction_bill_id IS NOT NULL")),
)

prepaid_movements = Table(  # the prepaid balance of a customer is the sum of these
    "prepaid_movements", metadata,
    _id(),
    Column("customer_no", String(20), ForeignKey("customers.customer_no"), nullable=False),
    Column("amount", Money, nullable=False),              # + into the balance, - out of it
    Column("kind", String(20), nullable=False),           # excess | applied | reversal | refund | correction
    Column("payment_id", Id, nullable=True),      # same flush as this row: `ledger verify` checks it
    Column("reversal_id", Id, nullable=True),     # likewise
    Column("bill_id", String(32), ForeignKey("bills.bill_id"), nullable=True),
    Column("refund_id", Id, ForeignKey("refunds.id"), nullable=True),
    Column("created_at", Ts, nullable=False),
    Index(None, "customer_no"),
    # a bill's removal (ledger/archive) checks its foreign key here; few movements name a bill (0021)
    Index(None, "bill_id", postgresql_where=text("bill_id IS NOT NULL"), sqlite_where=text("bill_id IS NOT NULL")),
)

journal_entries = Table(
    "journal_entries", metadata,
    _id("entry_id"),
    Column("business_date", Date, nullable=False),
    Column("kind", String(20), nullable=False),           # bill | bill_reversal | payment | reversal | refund | ...
    Column("ref_type", String(20), nullable=False),
    Column("ref_id", String(40), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("created_at", Ts, nullable=False),
    Index(None, "ref_type", "ref_id"),
    Index(None, "business_date"),        # a month's entries (the month-end summary; migration 0016)
)

journal_lines = Table(
    "journal_lines", metadata,
    _id(),
    Column("entry_id", Id, nullable=False),       # same flush as its entry: `ledger verify` checks it
    Column("account", String(40), nullable=False),
    Column("amount", Money, nullable=False),              # debit > 0, credit < 0
    Column("customer_no", String(20), nullable=True),
    # its entry's, written with it (the month's partition on PostgreSQL; `ledger verify` checks it: 0023)
    Column("business_date", Date, nullable=False),
    # with the amount (and account), the reports' sums read the index alone (migration 0018)
    Index(None, "entry_id", "account", "amount"),
    Index(None, "account", "amount"),
)

refunds = Table(
    "refunds", metadata,
    _id(),
    Column("customer_no", String(20), ForeignKey("customers.customer_no"), nullable=False),
    Column("amount", Money, nullable=False),
    Column("reason", String(200), nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("requested_at", Ts, nullable=False),
    Column("needs_approval", String(1), nullable=False),  # Y / N
    Column("paid_out_at", Ts, nullable=True),             # paid out (0011): once, with its refund_payout entry
    Column("paid_out_by", String(64), nullable=True),
    Column("payout_reference", String(64), nullable=True),
    CheckConstraint("amount > 0", name="amount"),
)

refund_decisions = Table(  # a large refund's approvals (or rejection), one per level; paid when all approved
    "refund_decisions", metadata,
    _id(),
    Column("refund_id", Id, ForeignKey("refunds.id"), nullable=False),
    Column("level", String(12), nullable=False, server_default="single"),  # accounting | director | single (<0011)
    Column("decision", String(1), nullable=False),        # A approved, J rejected
    Column("decided_by", String(64), nullable=False),
    Column("decided_at", Ts, nullable=False),
    Column("note", String(200), nullable=False, server_default=""),
    UniqueConstraint("refund_id", "level"),
)

debit_batches = Table(
    "debit_batches", metadata,
    _id("batch_id"),
    Column("plan_id", Id, nullable=True),
    Column("scheduled_for", Ts, nullable=True),
    Column("bank_code", String(11), ForeignKey("banks.bank_code"), nullable=False),
    Column("mode", String(10), nullable=False),           # online | file
    Column("created_at", Ts, nullable=False),
    UniqueConstraint("plan_id", "scheduled_for", name="uq_debit_batches_run"),
)

# Who asked for a debit: a plan's batch, or the channel of a single real-time debit (docs/debit-engines.md).
SINGLE_CHANNELS = ("call_centre", "voice", "online_banking", "district_office", "counter")
DEBIT_CHANNELS = ("batch",) + SINGLE_CHANNELS

debits = Table(  # one direct debit; state moves forward only (pending → sent → approved | declined | unknown → ...)
    "debits", metadata,
    _id("debit_id"),
    Column("batch_id", Id, ForeignKey("debit_batches.batch_id"), nullable=True),
    Column("chunk_no", Integer, nullable=True),
    Column("bank_code", String(11), ForeignKey("banks.bank_code"), nullable=False),
    Column("customer_no", String(20), ForeignKey("customers.customer_no"), nullable=False),
    Column("account_no", String(28), nullable=False),
    Column("amount", Money, nullable=False),
    Column("transmitted", String(10), nullable=True),     # identity given before the first send, never changed
    Column("stan", String(6), nullable=True),
    Column("rrn", String(12), nullable=True),
    Column("business_date", Date, nullable=True),
    Column("state", String(20), nullable=False),
    Column("response_code", String(2), nullable=True),
    Column("approval_code", String(6), nullable=True),
    Column("created_at", Ts, nullable=False),
    Column("updated_at", Ts, nullable=False),
    # who asked for it: "batch" for a plan's batch, else the channel of a single debit (DEBIT_CHANNELS)
    Column("channel", String(20), nullable=False, server_default="batch"),
    CheckConstraint("amount > 0", name="amount"),
    CheckConstraint(f"channel in ({', '.join(repr(c) for c in DEBIT_CHANNELS)})", name="channel"),
    Index(None, "state"),
    Index(None, "batch_id", "chunk_no"),
    Index(None, "batch_id", "state"),       # a batch's progress (the console's glance, every 10 s)
    Index(None, "customer_no"),          # a customer's debits (the API's customer look-up)
)

debit_bills = Table(
    "debit_bills", metadata,
    Column("debit_id", Id, ForeignKey("debits.debit_id"), primary_key=True),
    Column("bill_id", String(32), ForeignKey("bills.bill_id"), primary_key=True),
    Column("amount", Money, nullable=False),
    Index(None, "bill_id"),      # a bill's removal (ledger/archive) checks its foreign key here (0021)
)

debit_attempts = Table(  # append-only history of a debit: every message sent or received, every state change
    "debit_attempts", metadata,
    _id(),
    Column("debit_id", Id, ForeignKey("debits.debit_id"), nullable=False),
    Column("event", String(20), nullable=False),          # sent | approved | declined | unknown | reversal_sent | reversed | ...
    Column("mti", String(4), nullable=True),
    Column("response_code", String(2), nullable=True),
    Column("detail", String(200), nullable=False, server_default=""),
    Column("actor", String(64), nullable=False),
    Column("at", Ts, nullable=False),
    Index(None, "debit_id"),
)

outbox = Table(  # SMS notices, written in the same transaction as the change they tell of
    "outbox", metadata,
    _id(),
    Column("customer_no", String(20), nullable=False),
    Column("mobile", String(11), nullable=False),
    Column("kind", String(20), nullable=False),           # bill_notice | payment | debit_ok | debit_failed | reversal
    Column("text", String(500), nullable=False),
    Column("ref", String(40), nullable=False),            # what it tells of, e.g. payment:123
    Column("state", String(10), nullable=False),          # pending | sending | sent | dead
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Ts, nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("last_error", String(200), nullable=True),
    Column("created_at", Ts, nullable=False),
    Column("sent_at", Ts, nullable=True),
    # the notice's values as JSON (a reminder's amount, months, ...), for an SMS platform's template
    # parameters; NULL for a notice that has none beyond its row (docs/notifier.md)
    Column("params", Text, nullable=True),
    UniqueConstraint("kind", "ref", name="uq_outbox_kind_ref"),
    Index(None, "state", "next_attempt_at"),
    Index(None, "customer_no"),          # the notices sent to a customer (the API's customer look-up)
)

audit_log = Table(
    "audit_log", metadata,
    _id(),
    Column("at", Ts, nullable=False),
    Column("actor", String(64), nullable=False),          # operator name, or bank:<code>, or system:<process>
    Column("action", String(40), nullable=False),
    Column("object_type", String(20), nullable=False),
    Column("object_id", String(40), nullable=False),
    Column("reason", String(200), nullable=False, server_default=""),
    Column("details", Text, nullable=False, server_default="{}"),  # JSON
    Index(None, "object_type", "object_id"),
)
