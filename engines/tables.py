"""The debit engines' tables (on ``ledger.schema.metadata``; migration ``0004_engines``).

The ledger owns ``debit_batches``, ``debits``, ``debit_bills`` and ``debit_attempts``; these
tables hold what only the engines need: plans, the batch's progress, chunks with their leases,
customers skipped with the reason, the reversal schedule (store and forward), STAN counters,
running engine instances, and batch debit files (docs/spec/INTERFACE.md §7.2).
"""
from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Identity, Index, Integer, LargeBinary, String, Table, Text, UniqueConstraint

from ledger.schema import Id, Money, Ts, metadata, payments

debit_plans = Table(  # what to debit, from whom, when
    "debit_plans", metadata,
    Column("plan_id", Id, Identity(), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("bank_code", String(11), ForeignKey("banks.bank_code"), nullable=False),
    Column("cron", String(100), nullable=False),          # croniter expression, in time_zone
    Column("time_zone", String(40), nullable=False),
    Column("due_days", Integer, nullable=False),          # bills due on or before (run date + due_days)
    Column("district", String(20), nullable=True),        # only customers of this district
    Column("customers", Text, nullable=True),             # only these customers (comma-separated)
    Column("chunk_size", Integer, nullable=False),
    Column("status", String(1), nullable=False),          # A active, P paused
    Column("last_run_for", Ts, nullable=True),            # the latest scheduled time a batch was made for
    Column("created_by", String(64), nullable=False),
    Column("created_at", Ts, nullable=False),
    Column("updated_at", Ts, nullable=False),
)

engine_batches = Table(  # a batch's progress (the ledger's debit_batches row is the batch itself)
    "engine_batches", metadata,
    Column("batch_id", Id, ForeignKey("debit_batches.batch_id"), primary_key=True, autoincrement=False),
    Column("state", String(10), nullable=False),          # ready | done (online); file: new | written | applied | expired
    Column("kind", String(10), nullable=False),           # plan | single
    Column("debit_count", Integer, nullable=False),
    Column("debit_sum", Money, nullable=False),
    Column("skipped_count", Integer, nullable=False),
    Column("chunk_count", Integer, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", Ts, nullable=False),
    Column("updated_at", Ts, nullable=False),
    Index(None, "state"),
)

debit_chunks = Table(  # the unit an engine claims: row lock (SKIP LOCKED) to claim, lease to keep
    "debit_chunks", metadata,
    Column("chunk_id", Id, Identity(), primary_key=True),
    Column("batch_id", Id, ForeignKey("debit_batches.batch_id"), nullable=False),
    Column("chunk_no", Integer, nullable=False),
    Column("bank_code", String(11), nullable=False),
    Column("priority", Integer, nullable=False),          # higher first (a single real-time debit: 100)
    Column("state", String(10), nullable=False),          # ready | claimed | done
    Column("debit_count", Integer, nullable=False),
    Column("owner", String(64), nullable=True),
    Column("lease_until", Ts, nullable=True),
    Column("claims", Integer, nullable=False),            # how many times it was claimed
    Column("created_at", Ts, nullable=False),
    Column("updated_at", Ts, nullable=False),
    UniqueConstraint("batch_id", "chunk_no", name="uq_debit_chunks_no"),
    Index(None, "state", "bank_code", "priority"),
)

debit_skips = Table(  # customers a batch left out, and why (e.g. over the agreement's debit limit)
    "debit_skips", metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("batch_id", Id, ForeignKey("debit_batches.batch_id"), nullable=False),
    Column("customer_no", String(20), nullable=False),
    Column("amount", Money, nullable=False),
    Column("reason", String(200), nullable=False),
    Column("created_at", Ts, nullable=False),
    Index(None, "batch_id"),
)

debit_reversals = Table(  # the reversal schedule of a debit whose outcome is unknown (store and forward)
    "debit_reversals", metadata,
    Column("debit_id", Id, ForeignKey("debits.debit_id"), primary_key=True, autoincrement=False),
    Column("bank_code", String(11), nullable=False),
    Column("transmitted", String(10), nullable=False),   # the reversal's own 7 / 11, kept for the 0421s
    Column("stan", String(6), nullable=False),
    Column("state", String(12), nullable=False),          # pending | answered | refused | unanswered
    Column("attempts", Integer, nullable=False),          # 0420 + 0421s begun (written to the DB before each send)
    Column("next_at", Ts, nullable=False),
    Column("response_code", String(2), nullable=True),
    Column("owner", String(64), nullable=True),
    Column("lease_until", Ts, nullable=True),
    Column("created_at", Ts, nullable=False),
    Column("updated_at", Ts, nullable=False),
    Index(None, "state", "next_at"),
)

stan_counters = Table(  # STANs are unique per sender per day (§3): blocks reserved under a row lock
    "stan_counters", metadata,
    Column("bank_code", String(11), primary_key=True),
    Column("day", String(8), primary_key=True),           # YYYYMMDD of field 7 (local time)
    Column("next_stan", Integer, nullable=False),
)

engine_instances = Table(  # running engines (and `debit now` links), with a heartbeat lease
    "engine_instances", metadata,
    Column("name", String(64), primary_key=True),
    Column("host", String(100), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("banks", String(400), nullable=False),         # bank codes served, comma-separated
    Column("started_at", Ts, nullable=False),
    Column("heartbeat_at", Ts, nullable=False),
    Column("lease_until", Ts, nullable=False),
)

debit_files = Table(  # §7.2 request files: one per batch, written once
    "debit_files", metadata,
    Column("batch_id", Id, ForeignKey("debit_batches.batch_id"), primary_key=True, autoincrement=False),
    Column("bank_code", String(11), nullable=False),
    Column("file_name", String(100), nullable=False, unique=True),
    Column("request", LargeBinary, nullable=False),       # the file as written (GBK)
    Column("lines", Integer, nullable=False),
    Column("total", Money, nullable=False),
    Column("state", String(10), nullable=False),          # written | applied | expired
    Column("written_at", Ts, nullable=False),
    Column("deadline_at", Ts, nullable=False),
    Column("result_sha256", String(64), nullable=True),
    Column("result_applied_at", Ts, nullable=True),
    Column("written_by", String(64), nullable=False),
)

debit_file_lines = Table(
    "debit_file_lines", metadata,
    Column("batch_id", Id, ForeignKey("debit_batches.batch_id"), primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("debit_id", Id, ForeignKey("debits.debit_id"), nullable=False, unique=True),
)

