"""api: the operations API's answers to idempotent requests (api_idempotency; docs/api.md)

Revision ID: 0010
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle')


def upgrade() -> None:
    op.create_table('api_idempotency',
    sa.Column('principal', sa.String(length=64), nullable=False),
    sa.Column('idem_key', sa.String(length=200), nullable=False),
    sa.Column('method', sa.String(length=10), nullable=False),
    sa.Column('path', sa.String(length=300), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.PrimaryKeyConstraint('principal', 'idem_key', name=op.f('pk_api_idempotency'))
    )
    op.create_index(op.f('ix_api_idempotency_created_at'), 'api_idempotency', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_api_idempotency_created_at'), table_name='api_idempotency')
    op.drop_table('api_idempotency')
