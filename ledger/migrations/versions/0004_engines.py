"""engines: debit plans, batch progress, chunks with leases, skips, reversal schedule, STAN counters, engine instances, batch debit files

Revision ID: 0004
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

revision = '0004'
down_revision = '0001'
branch_labels = ('engines',)
depends_on = None


def upgrade() -> None:
    op.create_table('engine_instances',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=100), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('banks', sa.String(length=400), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_engine_instances'))
    )
    op.create_table('stan_counters',
    sa.Column('bank_code', sa.String(length=11), nullable=False),
    sa.Column('day', sa.String(length=8), nullable=False),
    sa.Column('next_stan', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('bank_code', 'day', name=op.f('pk_stan_counters'))
    )
    op.create_table('debit_plans',
    sa.Column('plan_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('bank_code', sa.String(length=11), nullable=False),
    sa.Column('cron', sa.String(length=100), nullable=False),
    sa.Column('time_zone', sa.String(length=40), nullable=False),
    sa.Column('due_days', sa.Integer(), nullable=False),
    sa.Column('district', sa.String(length=20), nullable=True),
    sa.Column('customers', sa.Text(), nullable=True),
    sa.Column('chunk_size', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=1), nullable=False),
    sa.Column('last_run_for', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.ForeignKeyConstraint(['bank_code'], ['banks.bank_code'], name=op.f('fk_debit_plans_bank_code')),
    sa.PrimaryKeyConstraint('plan_id', name=op.f('pk_debit_plans')),
    sa.UniqueConstraint('name', name=op.f('uq_debit_plans_name'))
    )
    op.create_table('debit_chunks',
    sa.Column('chunk_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('chunk_no', sa.Integer(), nullable=False),
    sa.Column('bank_code', sa.String(length=11), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('debit_count', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=True),
    sa.Column('claims', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['debit_batches.batch_id'], name=op.f('fk_debit_chunks_batch_id')),
    sa.PrimaryKeyConstraint('chunk_id', name=op.f('pk_debit_chunks')),
    sa.UniqueConstraint('batch_id', 'chunk_no', name='uq_debit_chunks_no')
    )
    op.create_index(op.f('ix_debit_chunks_state_bank_code_priority'), 'debit_chunks', ['state', 'bank_code', 'priority'], unique=False)
    op.create_table('debit_files',
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('bank_code', sa.String(length=11), nullable=False),
    sa.Column('file_name', sa.String(length=100), nullable=False),
    sa.Column('request', sa.LargeBinary(), nullable=False),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('written_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('deadline_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('result_sha256', sa.String(length=64), nullable=True),
    sa.Column('result_applied_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=True),
    sa.Column('written_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['debit_batches.batch_id'], name=op.f('fk_debit_files_batch_id')),
    sa.PrimaryKeyConstraint('batch_id', name=op.f('pk_debit_files')),
    sa.UniqueConstraint('file_name', name=op.f('uq_debit_files_file_name'))
    )
    op.create_table('debit_skips',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_no', sa.String(length=20), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['debit_batches.batch_id'], name=op.f('fk_debit_skips_batch_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_debit_skips'))
    )
    op.create_index(op.f('ix_debit_skips_batch_id'), 'debit_skips', ['batch_id'], unique=False)
    op.create_table('engine_batches',
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('debit_count', sa.Integer(), nullable=False),
    sa.Column('debit_sum', sa.BigInteger(), nullable=False),
    sa.Column('skipped_count', sa.Integer(), nullable=False),
    sa.Column('chunk_count', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['debit_batches.batch_id'], name=op.f('fk_engine_batches_batch_id')),
    sa.PrimaryKeyConstraint('batch_id', name=op.f('pk_engine_batches'))
    )
    op.create_index(op.f('ix_engine_batches_state'), 'engine_batches', ['state'], unique=False)
    op.create_table('debit_file_lines',
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('debit_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['debit_batches.batch_id'], name=op.f('fk_debit_file_lines_batch_id')),
    sa.ForeignKeyConstraint(['debit_id'], ['debits.debit_id'], name=op.f('fk_debit_file_lines_debit_id')),
    sa.PrimaryKeyConstraint('batch_id', 'seq', name=op.f('pk_debit_file_lines')),
    sa.UniqueConstraint('debit_id', name=op.f('uq_debit_file_lines_debit_id'))
    )
    op.create_table('debit_reversals',
    sa.Column('debit_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('bank_code', sa.String(length=11), nullable=False),
    sa.Column('transmitted', sa.String(length=10), nullable=False),
    sa.Column('stan', sa.String(length=6), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('response_code', sa.String(length=2), nullable=True),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), 'oracle'), nullable=False),
    sa.ForeignKeyConstraint(['debit_id'], ['debits.debit_id'], name=op.f('fk_debit_reversals_debit_id')),
    sa.PrimaryKeyConstraint('debit_id', name=op.f('pk_debit_reversals'))
    )
    op.create_index(op.f('ix_debit_reversals_state_next_at'), 'debit_reversals', ['state', 'next_at'], unique=False)
    op.create_index('ix_payments_rrn', 'payments', ['rrn'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_payments_rrn', table_name='payments')
    op.drop_index(op.f('ix_debit_reversals_state_next_at'), table_name='debit_reversals')
    op.drop_table('debit_reversals')
    op.drop_table('debit_file_lines')
    op.drop_index(op.f('ix_engine_batches_state'), table_name='engine_batches')
    op.drop_table('engine_batches')
    op.drop_index(op.f('ix_debit_skips_batch_id'), table_name='debit_skips')
    op.drop_table('debit_skips')
    op.drop_table('debit_files')
    op.drop_index(op.f('ix_debit_chunks_state_bank_code_priority'), table_name='debit_chunks')
    op.drop_table('debit_chunks')
    op.drop_table('debit_plans')
    op.drop_table('stan_counters')
    op.drop_table('engine_instances')
