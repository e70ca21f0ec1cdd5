"""the archive: what archived months carry forward, and which months went

``archive_openings``: per archived month, the totals of the removed rows (journal lines per
account, billed, allocated, each bank's payments less reversals, billing feed rows) that
``ledger verify`` and the reports add to what remains. ``archived_months``: one row per month
archived (``gridpay ledger archive``; docs/ledger.md, "Archiving old months"). Removing a bill
checks the foreign keys naming it: prepaid_movements.bill_id, allocations.correction_bill_id
(partial: few rows name one) and debit_bills.bill_id get the indexes that check reads (without
them, every bill removed would read those tables whole).

Revision ID: 0021
Revises: 0020
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle')


def upgrade() -> None:
    op.create_table('archive_openings',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('figure', sa.String(length=20), nullable=False),
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('month', 'figure', 'key', name=op.f('pk_archive_openings'))
    )
    op.create_table('archived_months',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('cutoff', TS, nullable=False),
    sa.Column('archived_at', TS, nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('directory', sa.String(length=500), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('month', name=op.f('pk_archived_months'))
    )
    op.create_index(op.f('ix_prepaid_movements_bill_id'), 'prepaid_movements', ['bill_id'], unique=False,
                    postgresql_where=sa.text('bill_id IS NOT NULL'), sqlite_where=sa.text('bill_id IS NOT NULL'))
    op.create_index(op.f('ix_allocations_correction_bill_id'), 'allocations', ['correction_bill_id'], unique=False,
                    postgresql_where=sa.text('correction_bill_id IS NOT NULL'),
                    sqlite_where=sa.text('correction_bill_id IS NOT NULL'))
    op.create_index(op.f('ix_debit_bills_bill_id'), 'debit_bills', ['bill_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_debit_bills_bill_id'), table_name='debit_bills')
    op.drop_index(op.f('ix_allocations_correction_bill_id'), table_name='allocations')
    op.drop_index(op.f('ix_prepaid_movements_bill_id'), table_name='prepaid_movements')
    op.drop_table('archived_months')
    op.drop_table('archive_openings')
