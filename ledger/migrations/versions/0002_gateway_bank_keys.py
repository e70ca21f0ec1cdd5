"""gateway: MAC keys per bank channel, shared by every gateway instance

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

revision = '0002'
down_revision = '0001'
branch_labels = ('gateway',)
depends_on = None

Ts = sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle')


def upgrade() -> None:
    op.create_table(
        'bank_keys',
        sa.Column('bank_code', sa.String(length=11), nullable=False),
        sa.Column('channel', sa.String(length=10), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('mak_under_zmk', sa.String(length=32), nullable=True),
        sa.Column('previous_under_zmk', sa.String(length=32), nullable=True),
        sa.Column('replaced_at', sa.Float(), nullable=True),
        sa.Column('saved_at', Ts, nullable=False),
        sa.PrimaryKeyConstraint('bank_code', 'channel', 'version', name=op.f('pk_bank_keys')),
    )


def downgrade() -> None:
    op.drop_table('bank_keys')
