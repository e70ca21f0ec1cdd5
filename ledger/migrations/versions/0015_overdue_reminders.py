"""overdue reminders: bills by due date, and a notice's values for SMS platform templates

The reminders job (ledger/reminders.py) reads the bills whose due date falls on a reminder day:
``bills.due_date`` gets an index, so that it reads a few days' bills and not all of them.
``outbox.params`` holds a notice's values as JSON (a reminder's amount, months, days overdue),
which a signed-API SMS platform's template parameters name (engines/sms_aliyun.py).

Revision ID: 0015
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_bills_due_date'), 'bills', ['due_date'], unique=False)
    op.add_column('outbox', sa.Column('params', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('params')
    op.drop_index(op.f('ix_bills_due_date'), table_name='bills')
