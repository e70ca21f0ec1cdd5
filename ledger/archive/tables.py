"""The archive's tables (migration 0021): what archived months carry forward, and which months went.

- ``archive_openings``: per archived month, the totals of what left the database, by figure and key,
  so that every invariant that sums history reads "openings + what remains" (ledger/verify.py):
    account     <account>   the removed journal lines' sum on the account (journal signs)
    billed      ''          principal + penalty of the removed bills
    allocated   ''          the removed allocations
    bank_paid   <bank>      the bank's removed payments less their removed reversals
    feed_rows   ''          billing feed rows removed (their seqs are in the archive file)
    remitted    <bank>      what reconciliation attributed of the removed statement credits to the
                            bank's remittances (invariants 6 and 15 add it to what remains)
  A customer's prepaid balance is carried by a prepaid movement of kind ``opening`` instead, so that
  every reader of the balance (inquiry, posting, the customer view) sums the same rows as before.
- ``archived_months``: one row per month archived (idempotence: a month listed is never archived
  again), with the archive's directory and its manifest's SHA-256.
"""
from __future__ import annotations

from sqlalchemy import Column, Integer, PrimaryKeyConstraint, String, Table

from ledger.schema import Money, Ts, metadata

archive_openings = Table(
    "archive_openings", metadata,
    Column("month", String(7), nullable=False),           # YYYY-MM: the archived month that carried it
    Column("figure", String(20), nullable=False),         # account, billed, ... remitted (above)
    Column("key", String(40), nullable=False),            # the account, the bank code, or ''
    Column("amount", Money, nullable=False),
    PrimaryKeyConstraint("month", "figure", "key"),
)

archived_months = Table(
    "archived_months", metadata,
    Column("month", String(7), primary_key=True),         # YYYY-MM
    Column("cutoff", Ts, nullable=False),                 # rows before this instant (the month's end) were judged
    Column("archived_at", Ts, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("directory", String(500), nullable=False),     # where its files went
    Column("manifest_sha256", String(64), nullable=False),
    Column("rows", Integer, nullable=False),              # rows removed, all tables
)
