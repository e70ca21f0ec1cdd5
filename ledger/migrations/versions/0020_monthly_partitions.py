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


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    today = datetime.now(timezone.utc).date()
    for name in partitions.PARTITION_KEYS:
        partitions.convert(op.execute, metadata.tables[name], today, AHEAD)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for name in partitions.PARTITION_KEYS:
        partitions.unconvert(op.execute, metadata.tables[name])
