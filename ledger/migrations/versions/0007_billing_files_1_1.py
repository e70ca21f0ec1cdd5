"""billing files 1.1: customers.collection_type (and both new customer columns in its history),
bills.category, indexed by period

- customers.collection_type: C, B, D or NULL (not given: the notice takes D while the customer has
  an active agreement, else C). Existing customers get NULL, which is what a 1.0 file meant.
- customer_history.district and .collection_type: every version keeps them, as the other columns.
- bills.category: E, V or F, NOT NULL; existing bills get E, the spec's default.
- ix_bills_period_category: month-end reports take a period's bills by category.

On SQLite adding a CHECK constraint rebuilds the table (alembic's batch mode).

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers') as batch:
        batch.add_column(sa.Column('collection_type', sa.String(length=1), nullable=True))
        batch.create_check_constraint(op.f('ck_customers_collection_type'), "collection_type in ('C','B','D')")
    with op.batch_alter_table('customer_history') as batch:
        batch.add_column(sa.Column('district', sa.String(length=20), nullable=True))
        batch.add_column(sa.Column('collection_type', sa.String(length=1), nullable=True))
    with op.batch_alter_table('bills') as batch:
        batch.add_column(sa.Column('category', sa.String(length=1), nullable=False, server_default='E'))
        batch.create_check_constraint(op.f('ck_bills_category'), "category in ('E','V','F')")
    op.create_index(op.f('ix_bills_period_category'), 'bills', ['period', 'category'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_bills_period_category'), table_name='bills')
    with op.batch_alter_table('bills') as batch:
        batch.drop_constraint(op.f('ck_bills_category'), type_='check')
        batch.drop_column('category')
    with op.batch_alter_table('customer_history') as batch:
        batch.drop_column('collection_type')
        batch.drop_column('district')
    with op.batch_alter_table('customers') as batch:
        batch.drop_constraint(op.f('ck_customers_collection_type'), type_='check')
        batch.drop_column('collection_type')
