"""Double-entry journal entries: every money movement is one balanced entry.

Accounts (see ledger/schema.py for the chart): debits are positive, credits negative.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

RECEIVABLE = "receivable"
REVENUE = "revenue"
PENALTY_INCOME = "penalty_income"
PREPAID = "prepaid"
REFUNDS_PAYABLE = "refunds_payable"


def bank_clearing(bank_code: str) -> str:
    return f"bank_clearing:{bank_code}"


@dataclass
class Entry:
    kind: str
    ref_type: str
    ref_id: str
    business_date: date
    actor: str
    lines: list[tuple[str, int, str | None]] = field(default_factory=list)  # (account, fen, customer_no)

    def debit(self, account: str, fen: int, customer_no: str | None = None) -> "Entry":
        return self._line(account, fen, customer_no)

    def credit(self, account: str, fen: int, customer_no: str | None = None) -> "Entry":
        return self._line(account, -fen, customer_no)

    def _line(self, account: str, fen: int, customer_no: str | None) -> "Entry":
        assert isinstance(fen, int) and not isinstance(fen, bool), "money is integer fen"
        if fen:
            self.lines.append((account, fen, customer_no))
        return self

    def check(self) -> None:
        total = sum(amount for _, amount, _ in self.lines)
        assert total == 0, f"unbalanced journal entry {self.kind} {self.ref_id}: {total}"

    def entry_row(self, created_at: datetime) -> dict:
        self.check()
        return {"business_date": self.business_date, "kind": self.kind, "ref_type": self.ref_type,
                "ref_id": str(self.ref_id), "actor": self.actor, "created_at": created_at}

    def line_rows(self, entry_id: int) -> list[dict]:
        return [{"entry_id": entry_id, "account": a, "amount": amt, "customer_no": c} for a, amt, c in self.lines]


def write_entries(conn, entries: list[Entry], created_at: datetime) -> list[int]:
    """Insert entries and their lines with one statement per table; returns the entry ids."""
    from sqlalchemy import insert

    from ledger.schema import journal_entries, journal_lines

    if not entries:
        return []
    result = conn.execute(
        insert(journal_entries).returning(journal_entries.c.entry_id, sort_by_parameter_order=True),
        [e.entry_row(created_at) for e in entries])
    ids = [row.entry_id for row in result]
    lines = [line for e, entry_id in zip(entries, ids) for line in e.line_rows(entry_id)]
    if lines:
        conn.execute(insert(journal_lines), lines)
    return ids
