"""look-up indexes: a customer's debits and notices, and the bill a correction replaced

The operations API's customer look-up (ledger/customer_view.py) reads a customer's debits
(debits.customer_no), the notices sent to them (outbox.customer_no) and each bill's correction
history (bills.replaces_bill_id; reverses_bill_id is unique, so already indexed). Without these
each look-up scanned the three tables whole.

Revision ID: 0013
Revises: 0012
"""
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_debits_customer_no'), 'debits', ['customer_no'], unique=False)
    op.create_index(op.f('ix_outbox_customer_no'), 'outbox', ['customer_no'], unique=False)
    op.create_index(op.f('ix_bills_replaces_bill_id'), 'bills', ['replaces_bill_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_bills_replaces_bill_id'), table_name='bills')
    op.drop_index(op.f('ix_outbox_customer_no'), table_name='outbox')
    op.drop_index(op.f('ix_debits_customer_no'), table_name='debits')
