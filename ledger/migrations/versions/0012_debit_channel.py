"""debit channel: who asked for each debit (debits.channel; docs/debit-engines.md)

"batch" for a plan's batch debits (every debit before this migration), else the channel of a single
real-time debit: call_centre, voice, online_banking, district_office, counter.

Revision ID: 0012
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

CHANNELS = ("batch", "call_centre", "voice", "online_banking", "district_office", "counter")


def upgrade() -> None:
    with op.batch_alter_table('debits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=20), server_default='batch', nullable=False))
        batch_op.create_check_constraint(op.f('ck_debits_channel'), f"channel in ({', '.join(repr(c) for c in CHANNELS)})")


def downgrade() -> None:
    with op.batch_alter_table('debits', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_debits_channel'), type_='check')
        batch_op.drop_column('channel')
