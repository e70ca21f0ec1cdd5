"""the archive removes reconciliation: the foreign keys its removals check, indexed

Archiving a month removes its bank runs, their items and matches and the debits they name
(docs/ledger.md, "Archiving old months"). Removing a debit checks ``recon_items.debit_id``, removing
a run checks ``recon_match_members.run_id``: both get a partial index (few rows name one), so the
check reads the index, not the table.

Revision ID: 0022
Revises: 0017 (branch recon: the recon tables are its)
"""
import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_recon_items_debit_id'), 'recon_items', ['debit_id'], unique=False,
                    postgresql_where=sa.text('debit_id IS NOT NULL'), sqlite_where=sa.text('debit_id IS NOT NULL'))
    op.create_index(op.f('ix_recon_match_members_run_id'), 'recon_match_members', ['run_id'], unique=False,
                    postgresql_where=sa.text('run_id IS NOT NULL'), sqlite_where=sa.text('run_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index(op.f('ix_recon_match_members_run_id'), table_name='recon_match_members')
    op.drop_index(op.f('ix_recon_items_debit_id'), table_name='recon_items')
