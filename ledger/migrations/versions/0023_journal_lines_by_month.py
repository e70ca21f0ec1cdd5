"""journal lines carry their entry's business date; on PostgreSQL they are partitioned by it

The journal's lines are its largest table. With its entry's business date on each line (NOT NULL,
filled here from the entry; the posting module writes it with the entry from now on) the lines of
a month sit in that month's partition on PostgreSQL, as the entries do since 0020: an archived
month's lines leave as one partition (DETACH + DROP), and a report of a month reads that month's
lines only. The table is rebuilt partitioned by RANGE(business_date) in this migration's one
transaction (ledger/partitions.py), the date read from the entries as the rows are copied (no
UPDATE of every line); its key becomes (id, business_date). No foreign key to the entries comes
back: 0005 dropped it from the posting's hot path and ``ledger verify`` checks the reference, and
now the date too. A line without an entry has no date: the upgrade stops there (on PostgreSQL
with nothing changed); `ledger verify` names such lines beforehand.
SQLite and Oracle: the column is added and filled, no partitions (docs/runbook.md "Partitions").

Revision ID: 0023
Revises: 0021
"""
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from ledger import partitions
from ledger.schema import metadata

revision = '0023'
down_revision = '0021'
branch_labels = None
depends_on = None

AHEAD = 3
TABLE = "journal_lines"
# the partitioned table's rows: a line's columns in the table's order (the new one last), its entry's date
ROWS = ("SELECT l.id, l.entry_id, l.account, l.amount, l.customer_no, e.business_date FROM journal_lines l "
        "LEFT JOIN journal_entries e ON e.entry_id = l.entry_id")
ENTRY_DATE = "(SELECT e.business_date FROM journal_entries e WHERE e.entry_id = journal_lines.entry_id)"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column('business_date', sa.Date(), nullable=True))
    if op.get_context().dialect.name == "postgresql":
        # filled as the rows are copied into the partitioned table, which makes it NOT NULL
        partitions.convert(op.execute, metadata.tables[TABLE], datetime.now(timezone.utc).date(), AHEAD,
                           rows=ROWS, first_month_of="journal_entries")
        return
    op.execute(f"UPDATE {TABLE} SET business_date = {ENTRY_DATE}")
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.alter_column('business_date', existing_type=sa.Date(), nullable=False)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        partitions.unconvert(op.execute, metadata.tables[TABLE])
        op.drop_column(TABLE, 'business_date')
        return
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.drop_column('business_date')
