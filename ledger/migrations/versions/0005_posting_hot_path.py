"""posting hot path: identity and RRN indexes lead with their selective column; no foreign keys
to rows a posting creates in the same transaction

- The identity and RRN unique constraints lead with their most selective column (STAN, RRN) instead
  of the bank code: without statistics (a new database, or autovacuum off) the planner took the bank
  code for selective, used only that column of the index and filtered every row of the bank, so a
  lookup grew with the day's traffic. ix_payments_rrn (rrn alone) goes: uq_payments_rrn now leads
  with rrn, and the ledger looks RRNs up by its whole key.
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


REORDERED = [  # table, constraint, columns before, columns now
    ("bank_requests", "uq_bank_requests_identity", ["bank_code", "id_year", "transmitted", "stan"],
     ["stan", "transmitted", "bank_code", "id_year"]),
    ("payments", "uq_payments_identity", ["bank_code", "channel", "id_year", "transmitted", "stan"],
     ["stan", "transmitted", "bank_code", "channel", "id_year"]),
    ("payments", "uq_payments_rrn", ["bank_code", "channel", "business_date", "rrn"],
     ["rrn", "business_date", "bank_code", "channel"]),
    ("orphan_reversals", "uq_orphan_reversals_orig", ["bank_code", "id_year", "orig_transmitted", "orig_stan"],
     ["orig_stan", "orig_transmitted", "bank_code", "id_year"]),
]


def upgrade() -> None:
    op.drop_index('ix_payments_rrn', table_name='payments')
    for table, fks in DROPPED.items():
        with op.batch_alter_table(table) as batch:  # SQLite: the table is rebuilt without them
            for name, *_ in fks:
                batch.drop_constraint(name, type_='foreignkey')
    _reorder(now=True)


def downgrade() -> None:
    _reorder(now=False)
    for table, fks in DROPPED.items():
        with op.batch_alter_table(table) as batch:
            for name, referred, column, referred_column in fks:
                batch.create_foreign_key(name, referred, [column], [referred_column])
    op.create_index('ix_payments_rrn', 'payments', ['rrn'], unique=False)


def _reorder(now: bool) -> None:
    for table, name, before, after in REORDERED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_='unique')
            batch.create_unique_constraint(name, after if now else before)
