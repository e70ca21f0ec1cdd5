"""posting hot path: RRNs looked up by uq_payments_rrn's whole key; no foreign keys to rows a
posting creates in the same transaction

- ix_payments_rrn (rrn alone) goes: the ledger now asks "is this RRN used by this bank, channel and
  business date" with all four columns of uq_payments_rrn.
- journal_lines.entry_id, allocations.payment_id / reversal_id / prepaid_movement_id and
  prepaid_movements.payment_id / reversal_id lose their foreign keys. Each references a row the
  same flush of ledger.postings inserts a moment before; on PostgreSQL checking it meant locking
  that fresh row FOR KEY SHARE (a WAL record per line), about a third of a debit's database cost.
  `gridpay ledger verify` checks these references instead (invariant 10). References to what
  existed before the transaction (customers, bills, banks, debits) keep their foreign keys.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

DROPPED = {
    "journal_lines": [("fk_journal_lines_entry_id", "journal_entries", "entry_id", "entry_id")],
    "allocations": [("fk_allocations_payment_id", "payments", "payment_id", "payment_id"),
                    ("fk_allocations_reversal_id", "reversals", "reversal_id", "reversal_id"),
                    ("fk_allocations_prepaid_movement_id", "prepaid_movements", "prepaid_movement_id", "id")],
    "prepaid_movements": [("fk_prepaid_movements_payment_id", "payments", "payment_id", "payment_id"),
                          ("fk_prepaid_movements_reversal_id", "reversals", "reversal_id", "reversal_id")],
}


def upgrade() -> None:
    op.drop_index('ix_payments_rrn', table_name='payments')
    for table, fks in DROPPED.items():
        with op.batch_alter_table(table) as batch:  # SQLite: the table is rebuilt without them
            for name, *_ in fks:
                batch.drop_constraint(name, type_='foreignkey')


def downgrade() -> None:
    for table, fks in DROPPED.items():
        with op.batch_alter_table(table) as batch:
            for name, referred, column, referred_column in fks:
                batch.create_foreign_key(name, referred, [column], [referred_column])
    op.create_index('ix_payments_rrn', 'payments', ['rrn'], unique=False)
