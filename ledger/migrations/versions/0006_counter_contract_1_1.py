"""counter contract 1.1: the RRN of every financial request a bank sends is kept (§4.7)

docs/spec/INTERFACE.md 1.1 §4.7: an RRN used twice by one bank on one business date for
different financial requests (payments and reversals, answered or declined) gets 94. The
payments table knew only the RRNs of payments made; request_rrns holds the RRN of every request
the ledger records in bank_requests (but one refused for reusing an RRN) with the payment it
belongs to (a reversal's is its original's), keyed by RRN first, its most selective column, so a
group commit looks up all of its RRNs in one index scan, and a concurrent request with the same
RRN fails on the key and is decided again.

Prepaid movements of kind 'applied' made by a counter payment now name it (payment_id), so its
reversal gives that prepaid back (§4.5); the column exists already. Those made before this
revision do not name their payment: reversing such a payment leaves its use of prepaid as it was.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('request_rrns',
    sa.Column('rrn', sa.String(length=12), nullable=False),
    sa.Column('business_date', sa.Date(), nullable=False),
    sa.Column('bank_code', sa.String(length=11), nullable=False),
    sa.Column('id_year', sa.Integer(), nullable=False),
    sa.Column('transmitted', sa.String(length=10), nullable=False),
    sa.Column('stan', sa.String(length=6), nullable=False),
    sa.PrimaryKeyConstraint('rrn', 'business_date', 'bank_code', name=op.f('pk_request_rrns'))
    )


def downgrade() -> None:
    op.drop_table('request_rrns')
