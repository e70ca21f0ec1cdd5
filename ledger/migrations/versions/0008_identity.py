"""identity: principals (operators and clients), their API keys and sessions (docs/access.md)

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TS = sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle')


def upgrade() -> None:
    op.create_table('principals',
    sa.Column('principal_id', ID, sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('display_name', sa.String(length=120), nullable=False),
    sa.Column('roles', sa.String(length=200), server_default='', nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=True),
    sa.Column('totp_secret', sa.String(length=100), nullable=True),
    sa.Column('totp_last_step', sa.Integer(), nullable=True),
    sa.Column('disabled', sa.String(length=1), server_default='N', nullable=False),
    sa.Column('failed_logins', sa.Integer(), server_default='0', nullable=False),
    sa.Column('locked_until', TS, nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('changed_at', TS, nullable=False),
    sa.CheckConstraint("kind in ('operator','client')", name=op.f('ck_principals_kind')),
    sa.CheckConstraint("disabled in ('Y','N')", name=op.f('ck_principals_disabled')),
    sa.PrimaryKeyConstraint('principal_id', name=op.f('pk_principals')),
    sa.UniqueConstraint('name', name=op.f('uq_principals_name'))
    )
    op.create_table('api_keys',
    sa.Column('key_id', ID, sa.Identity(always=False), nullable=False),
    sa.Column('principal_id', ID, nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('expires_at', TS, nullable=False),
    sa.Column('revoked_at', TS, nullable=True),
    sa.Column('last_used_at', TS, nullable=True),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.principal_id'], name=op.f('fk_api_keys_principal_id')),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_index(op.f('ix_api_keys_principal_id'), 'api_keys', ['principal_id'], unique=False)
    op.create_table('sessions',
    sa.Column('session_id', ID, sa.Identity(always=False), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('principal_id', ID, nullable=False),
    sa.Column('source', sa.String(length=100), server_default='', nullable=False),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('expires_at', TS, nullable=False),
    sa.Column('last_seen_at', TS, nullable=False),
    sa.Column('revoked_at', TS, nullable=True),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.principal_id'], name=op.f('fk_sessions_principal_id')),
    sa.PrimaryKeyConstraint('session_id', name=op.f('pk_sessions')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_sessions_token_sha256'))
    )
    op.create_index(op.f('ix_sessions_principal_id'), 'sessions', ['principal_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_sessions_principal_id'), table_name='sessions')
    op.drop_table('sessions')
    op.drop_index(op.f('ix_api_keys_principal_id'), table_name='api_keys')
    op.drop_table('api_keys')
    op.drop_table('principals')
