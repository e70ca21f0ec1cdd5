"""the console's day at a glance: reversals by business date, a batch's debits by state

The glance (api/console/glance_data.py) refreshes every 10 seconds: today's reversals were read by a
scan of every reversal, and a running batch's progress counted its debits by state through
(batch_id, chunk_no) and the table's rows — for a batch of two million debits, two million rows
read every refresh. With these both are read from an index.

Revision ID: 0019
Revises: 0018
"""
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_reversals_business_date'), 'reversals', ['business_date'], unique=False)
    op.create_index(op.f('ix_debits_batch_id_state'), 'debits', ['batch_id', 'state'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_debits_batch_id_state'), table_name='debits')
    op.drop_index(op.f('ix_reversals_business_date'), table_name='reversals')
