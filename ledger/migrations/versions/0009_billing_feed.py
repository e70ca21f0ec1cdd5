"""the billing system's payment feed: billing_feed and its one-row counter

- billing_feed: one row per change that matters to billing, numbered by seq 1, 2, 3, ... with no
  gap, in commit order (docs/billing-feed.md).
- billing_feed_counter: the last seq given, and from which payment, reversal and prepaid movement
  ids on the ledger's changes are in the feed: the history before this migration is not (its rows
  would lack the after-change columns), and ``ledger verify`` checks everything since one to one.

Revision ID: 0009
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle')
ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
KINDS = ("payment", "debit_payment", "bank_file_payment", "reversal", "debit_reversal", "red_reversal",
         "refund", "correction", "prepaid_applied")


def upgrade() -> None:
    op.create_table('billing_feed',
    sa.Column('seq', ID, autoincrement=False, nullable=False),
    sa.Column('at', TS, nullable=False),
    sa.Column('business_date', sa.Date(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('customer_no', sa.String(length=20), nullable=False),
    sa.Column('bill_id', sa.String(length=32), nullable=True),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('payment_id', ID, nullable=True),
    sa.Column('reversal_id', ID, nullable=True),
    sa.Column('debit_id', ID, nullable=True),
    sa.Column('refund_id', ID, nullable=True),
    sa.Column('prepaid_movement_id', ID, nullable=True),
    sa.Column('correction_bill_id', sa.String(length=32), nullable=True),
    sa.Column('bank_code', sa.String(length=11), nullable=True),
    sa.Column('channel', sa.String(length=1), nullable=True),
    sa.Column('bill_owing_fen', sa.BigInteger(), nullable=True),
    sa.Column('bill_paid', sa.String(length=1), nullable=True),
    sa.Column('customer_owing_fen', sa.BigInteger(), nullable=False),
    sa.Column('prepaid_balance_fen', sa.BigInteger(), nullable=False),
    sa.Column('customer_due_fen', sa.BigInteger(), nullable=False),
    sa.Column('customer_paid', sa.String(length=1), nullable=False),
    sa.CheckConstraint("kind in (" + ", ".join(f"'{k}'" for k in KINDS) + ")", name=op.f('ck_billing_feed_kind')),
    sa.CheckConstraint("customer_paid in ('Y','N')", name=op.f('ck_billing_feed_customer_paid')),
    sa.CheckConstraint("bill_paid in ('Y','N')", name=op.f('ck_billing_feed_bill_paid')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_billing_feed'))
    )
    op.create_table('billing_feed_counter',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('from_payment_id', sa.BigInteger(), nullable=False),
    sa.Column('from_reversal_id', sa.BigInteger(), nullable=False),
    sa.Column('from_movement_id', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_billing_feed_counter_one_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_feed_counter'))
    )
    # the feed starts here: changes recorded before this migration are not in it
    op.execute("INSERT INTO billing_feed_counter (id, last_seq, from_payment_id, from_reversal_id, from_movement_id) "
               "SELECT 1, 0, (SELECT COALESCE(MAX(payment_id), 0) FROM payments), "
               "(SELECT COALESCE(MAX(reversal_id), 0) FROM reversals), "
               "(SELECT COALESCE(MAX(id), 0) FROM prepaid_movements)" + (" FROM dual" if _oracle() else ""))


def _oracle() -> bool:
    return op.get_context().dialect.name == "oracle"


def downgrade() -> None:
    op.drop_table('billing_feed_counter')
    op.drop_table('billing_feed')
