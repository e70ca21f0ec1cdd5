"""The in-memory state of a posting batch: its bills, customers, payments and outcomes being built.

``New`` stands for the id of a row the batch inserts; ids are reserved just before the inserts
(``ledger.ids.reserve_ids_many``) and ``resolved`` turns either into the id.
"""
from __future__ import annotations

from ledger.ids import receipt_no


class New:
    """The id of a row this batch inserts; set just before the inserts (ledger.ids.reserve_ids)."""
    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id: int | None = None

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"New({self.id})"


def resolved(x):
    return x.id if isinstance(x, New) else x


class Bill:
    __slots__ = ("bill_id", "customer_no", "period", "principal", "penalty", "due_date", "allocated", "cancelled")

    def __init__(self, row) -> None:
        self.bill_id = row.bill_id
        self.customer_no = row.customer_no
        self.period = row.period
        self.principal = int(row.principal)
        self.penalty = int(row.penalty)
        self.due_date = row.due_date
        self.allocated = int(row.allocated)
        self.cancelled = bool(row.cancelled)

    @property
    def owing(self) -> int:
        return 0 if self.cancelled else self.principal + self.penalty - self.allocated

    def owing_split(self) -> tuple[int, int]:
        """(principal, penalty) still owed: money paid on a bill goes to its penalty first."""
        owing = self.owing
        penalty = max(0, self.penalty - self.allocated)
        return owing - penalty, penalty

    def sort_key(self):
        return (self.period, self.due_date, self.bill_id)


class Customer:
    __slots__ = ("customer_no", "name", "status", "prepay_allowed", "mobile", "prepaid", "bills", "history", "moves")

    def __init__(self, row) -> None:
        self.customer_no = row.customer_no
        self.name = row.customer_name
        self.status = row.status
        self.prepay_allowed = row.prepay_allowed
        self.mobile = row.mobile
        self.prepaid = 0
        self.bills: dict[str, Bill] = {}
        self.history: list[tuple] | None = None     # (payment ref or None, amount) of the stored prepaid movements
        self.moves: list[tuple] = []                # the same, of the movements this batch makes

    def open_bills(self) -> list[Bill]:
        return sorted((b for b in self.bills.values() if b.owing > 0), key=Bill.sort_key)

    def move_prepaid(self, ref, amount: int) -> None:
        self.prepaid += amount
        self.moves.append((ref, amount))

    def prepaid_history(self) -> list[tuple]:
        """Every prepaid movement in order; without the stored ones, the balance they left as one."""
        if self.history is not None:
            return self.history + self.moves
        return [(None, self.prepaid - sum(amount for _, amount in self.moves))] + self.moves


class Payment:
    """A payment as far as reversing it goes (from the database or posted in this batch)."""
    __slots__ = ("ref", "bank_code", "channel", "customer_no", "amount", "business_date", "receipt",
                 "allocs", "used", "excess", "reversed", "debit_id")

    def __init__(self, ref, bank_code, channel, customer_no, amount, business_date, receipt, debit_id=None):
        self.ref = ref                       # payment_id, or New
        self.bank_code = bank_code
        self.channel = channel
        self.customer_no = customer_no
        self.amount = amount
        self.business_date = business_date
        self.receipt = receipt               # str, or None until ids are known
        self.allocs: list[tuple[str, int]] = []   # (bill_id, amount) paid by the payment itself
        self.used: list[tuple[str, int]] = []     # (bill_id, amount) paid from the prepaid balance it used
        self.excess = 0                      # into prepaid
        self.reversed = False
        self.debit_id = debit_id

    def receipt_no(self) -> str:
        return self.receipt or receipt_no(self.business_date, resolved(self.ref))


class Result:
    """An outcome being built; receipt numbers (and the ids in ``ids``: field name -> New) are
    filled in once ids are reserved."""
    __slots__ = ("code", "fields", "detail", "payment", "ids")

    def __init__(self, code: str, fields: dict, detail: str = "", payment: Payment | None = None,
                 ids: dict | None = None):
        self.code, self.fields, self.detail, self.payment = code, fields, detail[:200], payment
        self.ids = ids

    def final_fields(self) -> dict:
        if self.payment is not None and "receipt_no" not in self.fields:
            self.fields["receipt_no"] = self.payment.receipt_no()
        if self.ids:
            for name, ref in self.ids.items():
                self.fields[name] = resolved(ref)
        return self.fields
