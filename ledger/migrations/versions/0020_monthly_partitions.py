"""monthly partitions on PostgreSQL: journal entries, audit log, debit attempts

A year of history keeps a month's work on a month's partition, and an archived month leaves as one
partition (DETACH + DROP) instead of millions of DELETEs. Each table is rebuilt partitioned by
RANGE of its date (ledger/partitions.py says which), its rows and ids kept, in this migration's one
transaction; months from its first row's to three months ahead get a partition, and a DEFAULT one
takes anything else. SQLite and Oracle: nothing changes (docs/runbook.md "Partitions").

Revision ID: 0020
Revises: 0019
"""
from datetime import datetime, timezone

from alembic import op

from ledger import partitions
from ledger.schema import metadata

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

AHEAD = 3
# this revision's tables (ledger.partitions.PARTITION_KEYS grew later: journal_lines, 0023)
TABLES = ("journal_entries", "audit_log", "debit_attempts")


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    today = datetime.now(timezone.utc).date()
    for name in TABLES:
        partitions.convert(op.execute, metadata.tables[name], today, AHEAD)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for name in TABLES:
        partitions.unconvert(op.execute, metadata.tables[name])
