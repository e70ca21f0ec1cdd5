"""covering indexes for the finance reports at a million customers

The month-end summary sums journal lines of two accounts (over the whole journal, and over a
month's entries), aging and arrears sum each bill's allocations up to a cut-off. The single-column
indexes found the rows, then read each row from the table; these indexes lead with the same
column (so they serve every look-up the old ones served) and carry what the reports read, so the
sums are read from the index alone.

Revision ID: 0018
Revises: 0016
"""
from alembic import op

revision = '0018'
down_revision = '0016'
branch_labels = None
depends_on = None

REPLACED = [  # (table, old columns, new columns)
    ('journal_lines', ['account'], ['account', 'amount']),
    ('journal_lines', ['entry_id'], ['entry_id', 'account', 'amount']),
    ('allocations', ['bill_id'], ['bill_id', 'created_at', 'amount']),
]


def _name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    for table, old, new in REPLACED:
        op.create_index(op.f(_name(table, new)), table, new, unique=False)
        op.drop_index(op.f(_name(table, old)), table_name=table)


def downgrade() -> None:
    for table, old, new in REPLACED:
        op.create_index(op.f(_name(table, old)), table, old, unique=False)
        op.drop_index(op.f(_name(table, new)), table_name=table)
