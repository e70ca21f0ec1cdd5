"""refund levels: a large refund's two approvals (accounting centre, department director) and the
record of its payout (docs/access.md "Large refunds", docs/api.md)

A decision row now names its level; one decision per refund and level (was: one per refund).
Decisions made before this revision were the single second-operator approval: level ``single``.
The payout of a paid refund is recorded on the refund (``paid_out_at``, ``paid_out_by``,
``payout_reference``); no money moves (refunds_payable keeps it until the finance issue).

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle')


def upgrade() -> None:
    with op.batch_alter_table('refund_decisions') as batch:
        batch.add_column(sa.Column('level', sa.String(length=12), server_default='single', nullable=False))
        batch.drop_constraint('uq_refund_decisions_refund_id', type_='unique')
        batch.create_unique_constraint('uq_refund_decisions_refund_id_level', ['refund_id', 'level'])
    with op.batch_alter_table('refunds') as batch:
        batch.add_column(sa.Column('paid_out_at', TS, nullable=True))
        batch.add_column(sa.Column('paid_out_by', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('payout_reference', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('refunds') as batch:
        batch.drop_column('payout_reference')
        batch.drop_column('paid_out_by')
        batch.drop_column('paid_out_at')
    with op.batch_alter_table('refund_decisions') as batch:
        batch.drop_constraint('uq_refund_decisions_refund_id_level', type_='unique')
        batch.create_unique_constraint('uq_refund_decisions_refund_id', ['refund_id'])
        batch.drop_column('level')
