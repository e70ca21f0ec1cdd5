"""recon: reconciliation runs, their items, matches and the drop directory's files

Revision ID: 0003
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

revision = '0003'
down_revision = '0001'
branch_labels = ('recon',)
depends_on = None


def upgrade() -> None:
    op.create_table('recon_drop_files',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('outcome', sa.String(length=10), nullable=False),
    sa.Column('ref', sa.String(length=40), server_default='', nullable=False),
    sa.Column('detail', sa.String(length=400), server_default='', nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recon_drop_files'))
    )
    op.create_index(op.f('ix_recon_drop_files_file_sha256'), 'recon_drop_files', ['file_sha256'], unique=False)
    op.create_table('recon_matches',
    sa.Column('match_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('note', sa.String(length=200), server_default='', nullable=False),
    sa.Column('undone_by', sa.String(length=64), nullable=True),
    sa.Column('undone_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=True),
    sa.PrimaryKeyConstraint('match_id', name=op.f('pk_recon_matches'))
    )
    op.create_table('recon_runs',
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('bank_code', sa.String(length=11), nullable=True),
    sa.Column('business_date', sa.Date(), nullable=True),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('file_format', sa.String(length=40), nullable=False),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('bank_count', sa.Integer(), nullable=False),
    sa.Column('bank_sum', sa.BigInteger(), nullable=False),
    sa.Column('ledger_count', sa.Integer(), nullable=False),
    sa.Column('ledger_sum', sa.BigInteger(), nullable=False),
    sa.Column('matched_count', sa.Integer(), nullable=False),
    sa.Column('matched_sum', sa.BigInteger(), nullable=False),
    sa.Column('exception_count', sa.Integer(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('details', sa.Text(), server_default='{}', nullable=False),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_recon_runs')),
    sa.UniqueConstraint('kind', 'file_sha256', name='uq_recon_runs_file')
    )
    op.create_index(op.f('ix_recon_runs_business_date_bank_code'), 'recon_runs', ['business_date', 'bank_code'], unique=False)
    op.create_table('recon_items',
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('bank_code', sa.String(length=11), nullable=True),
    sa.Column('business_date', sa.Date(), nullable=True),
    sa.Column('channel', sa.String(length=1), nullable=True),
    sa.Column('rrn', sa.String(length=12), nullable=True),
    sa.Column('customer_no', sa.String(length=20), nullable=True),
    sa.Column('bank_amount', sa.BigInteger(), nullable=True),
    sa.Column('ledger_amount', sa.BigInteger(), nullable=True),
    sa.Column('bank_status', sa.String(length=1), nullable=True),
    sa.Column('ledger_status', sa.String(length=1), nullable=True),
    sa.Column('payment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('debit_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('line_no', sa.Integer(), nullable=True),
    sa.Column('transmitted', sa.String(length=14), nullable=True),
    sa.Column('stan', sa.String(length=6), nullable=True),
    sa.Column('terminal', sa.String(length=20), nullable=True),
    sa.Column('direction', sa.String(length=1), nullable=True),
    sa.Column('reversal', sa.String(length=1), nullable=True),
    sa.Column('method', sa.String(length=2), nullable=True),
    sa.Column('cheque_no', sa.String(length=35), nullable=True),
    sa.Column('reference', sa.String(length=140), nullable=True),
    sa.Column('entry_ref', sa.String(length=70), nullable=True),
    sa.Column('counterparty', sa.String(length=140), nullable=True),
    sa.Column('value_date', sa.Date(), nullable=True),
    sa.Column('detail', sa.String(length=400), server_default='', nullable=False),
    sa.Column('resolution', sa.String(length=20), nullable=True),
    sa.Column('resolved_by', sa.String(length=64), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=True),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.ForeignKeyConstraint(['debit_id'], ['debits.debit_id'], name=op.f('fk_recon_items_debit_id')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.payment_id'], name=op.f('fk_recon_items_payment_id')),
    sa.ForeignKeyConstraint(['run_id'], ['recon_runs.run_id'], name=op.f('fk_recon_items_run_id')),
    sa.PrimaryKeyConstraint('item_id', name=op.f('pk_recon_items'))
    )
    op.create_index(op.f('ix_recon_items_payment_id'), 'recon_items', ['payment_id'], unique=False)
    op.create_index(op.f('ix_recon_items_run_id'), 'recon_items', ['run_id'], unique=False)
    op.create_index(op.f('ix_recon_items_status_bank_code_business_date'), 'recon_items', ['status', 'bank_code', 'business_date'], unique=False)
    op.create_table('recon_match_members',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('match_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('payment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('side', sa.String(length=10), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['recon_items.item_id'], name=op.f('fk_recon_match_members_item_id')),
    sa.ForeignKeyConstraint(['match_id'], ['recon_matches.match_id'], name=op.f('fk_recon_match_members_match_id')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.payment_id'], name=op.f('fk_recon_match_members_payment_id')),
    sa.ForeignKeyConstraint(['run_id'], ['recon_runs.run_id'], name=op.f('fk_recon_match_members_run_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recon_match_members'))
    )
    op.create_index(op.f('ix_recon_match_members_item_id'), 'recon_match_members', ['item_id'], unique=False)
    op.create_index(op.f('ix_recon_match_members_match_id'), 'recon_match_members', ['match_id'], unique=False)
    op.create_index(op.f('ix_recon_match_members_payment_id'), 'recon_match_members', ['payment_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_recon_match_members_payment_id'), table_name='recon_match_members')
    op.drop_index(op.f('ix_recon_match_members_match_id'), table_name='recon_match_members')
    op.drop_index(op.f('ix_recon_match_members_item_id'), table_name='recon_match_members')
    op.drop_table('recon_match_members')
    op.drop_index(op.f('ix_recon_items_status_bank_code_business_date'), table_name='recon_items')
    op.drop_index(op.f('ix_recon_items_run_id'), table_name='recon_items')
    op.drop_index(op.f('ix_recon_items_payment_id'), table_name='recon_items')
    op.drop_table('recon_items')
    op.drop_index(op.f('ix_recon_runs_business_date_bank_code'), table_name='recon_runs')
    op.drop_table('recon_runs')
    op.drop_table('recon_matches')
    op.drop_index(op.f('ix_recon_drop_files_file_sha256'), table_name='recon_drop_files')
    op.drop_table('recon_drop_files')
