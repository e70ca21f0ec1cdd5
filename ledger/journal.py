"""Double-entry journal entries: every money movement is one balanced entry.

Accounts (see ledger/schema.py for the chart): debits are positive, credits negative. This module
holds the accounts and the entry; ``ledger.posting.writes`` is the one place entries are written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

RECEIVABLE = "receivable"
REVENUE = "revenue"
PENALTY_INCOME = "penalty_income"
PREPAID = "prepaid"
REFUNDS_PAYABLE = "refunds_payable"
COLLECTION = "collection"   # the utility's collection account: banks' remittances in, refunds paid out


class UnbalancedEntry(ValueError):
    """A journal entry whose lines do not sum to 0: nothing may be written (a bug, not bad input)."""


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
        if not isinstance(fen, int) or isinstance(fen, bool):
            raise TypeError(f"money is integer fen, not {fen!r}")
        if fen:
            self.lines.append((account, fen, customer_no))
        return self

    def check(self) -> None:
        total = sum(amount for _, amount, _ in self.lines)
        if total != 0:
            raise UnbalancedEntry(f"unbalanced journal entry {self.kind} {self.ref_id}: {total}")

    def entry_row(self, created_at: datetime) -> dict:
        self.check()
        return {"business_date": self.business_date, "kind": self.kind, "ref_type": self.ref_type,
                "ref_id": str(self.ref_id), "actor": self.actor, "created_at": created_at}

    def line_rows(self, entry_id: int) -> list[dict]:
        return [{"entry_id": entry_id, "business_date": self.business_date, "account": a, "amount": amt,
                 "customer_no": c} for a, amt, c in self.lines]

