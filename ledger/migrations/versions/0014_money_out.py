"""money that leaves the ledger: a statement debit's match names the refund it paid out

A finance statement's debit referencing a refund (docs/reconciliation.md, "Refund payouts") is
matched to that refund: the match's ledger-side member is the refund, as a remittance's is the
bank run. The journal's new kinds (remittance, remittance_reversal, refund_payout) and the
collection account need no schema.

Revision ID: 0014
Revises: 0003 (branch recon)
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0003'   # the recon branch's head: recon_match_members is its table
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('recon_match_members') as batch:
        batch.add_column(sa.Column('refund_id', ID, nullable=True))
        batch.create_foreign_key(op.f('fk_recon_match_members_refund_id'), 'refunds', ['refund_id'], ['id'])
        batch.create_index(op.f('ix_recon_match_members_refund_id'), ['refund_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('recon_match_members') as batch:
        batch.drop_index(op.f('ix_recon_match_members_refund_id'))
        batch.drop_constraint(op.f('fk_recon_match_members_refund_id'), type_='foreignkey')
        batch.drop_column('refund_id')
