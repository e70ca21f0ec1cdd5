"""money that leaves the ledger: a remittance credit claims the bank run it remits

A finance statement's credit referenced to a bank run records that run when it is stored
(``recon_items.remits_run_id``), so a later credit for the same run is compared with what remains
of it (docs/reconciliation.md, "What a remittance posts"). Remittance items stored before name
their run only in their detail ("run N"): the column is filled from it.

Revision ID: 0017
Revises: 0014 (branch recon)
"""
import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0014'   # the recon branch's head: recon_items is its table
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('recon_items') as batch:
        batch.add_column(sa.Column('remits_run_id', ID, nullable=True))
        batch.create_foreign_key(op.f('fk_recon_items_remits_run_id'), 'recon_runs',
                                 ['remits_run_id'], ['run_id'])
        batch.create_index(op.f('ix_recon_items_remits_run_id'), ['remits_run_id'], unique=False)
    _claim_stored_remittances()


def _claim_stored_remittances() -> None:
    """Remittances stored with their run's expected amount (matched or partly matched) claim the
    bank run of their bank their detail names (": run N", ": run N, ..." or "run N expects");
    plain SQL, so that ``gridpay db sql`` prints it too."""
    items = sa.table('recon_items', sa.column('kind'), sa.column('bank_code'), sa.column('ledger_amount'),
                     sa.column('detail'), sa.column('remits_run_id'))
    runs = sa.table('recon_runs', sa.column('run_id'), sa.column('kind'), sa.column('bank_code'))
    run = sa.cast(runs.c.run_id, sa.String(20))
    named = sa.or_(items.c.detail.like('%: run ' + run), items.c.detail.like('%: run ' + run + ',%'),
                   items.c.detail.like('% run ' + run + ' expects %'))
    claimed = (sa.select(sa.func.min(runs.c.run_id))
               .where(runs.c.kind == 'bank', runs.c.bank_code == items.c.bank_code, named).scalar_subquery())
    op.execute(sa.update(items).where(items.c.kind == 'remittance', items.c.ledger_amount.is_not(None))
               .values(remits_run_id=claimed))


def downgrade() -> None:
    with op.batch_alter_table('recon_items') as batch:
        batch.drop_index(op.f('ix_recon_items_remits_run_id'))
        batch.drop_constraint(op.f('fk_recon_items_remits_run_id'), type_='foreignkey')
        batch.drop_column('remits_run_id')
