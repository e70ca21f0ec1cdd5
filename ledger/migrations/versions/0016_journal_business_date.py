"""journal entries by business date: the month-end summary's month

The month-end summary (ledger/reports/month_end.py) sums the lines of one month's entries and of
any entries dated after it; without an index on the entries' business date each such read went
through the whole journal.

Revision ID: 0016
Revises: 0015
"""
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_journal_entries_business_date'), 'journal_entries', ['business_date'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_journal_entries_business_date'), table_name='journal_entries')
