"""The billing feed's rows of a posting batch (docs/billing-feed.md): one per change that matters to
billing, with what billing needs after it - what the bill and the customer still owe, the prepaid
balance, and the paid flag.

The rules call these as they decide (``rules``, ``bank_kinds``, ``office_kinds``), so a row shows
the state right after its own change, even when one batch changes a customer twice. That state
is the batch's in-memory one: for every customer whose money moves, the batch has read ALL of the
customer's open bills (the prefetch rounds, or the back office's kinds' own reads), and each Bill
follows what the batch allocates. ``writes.flush`` numbers and inserts the rows last.
"""
from __future__ import annotations

from datetime import date

from ledger.posting.model import Bill, Customer, Payment, resolved
from ledger.posting.prefetch import BatchState

REVERSAL_KINDS = {"B": "reversal", "D": "debit_reversal", "R": "red_reversal"}   # by the reversal's source


def owing_of(bills) -> int:
    """What these bills still owe (a cancelled bill owes nothing)."""
    return sum(max(0, b.owing) for b in bills)


def yes(flag: bool) -> str:
    return "Y" if flag else "N"


class FeedRows(BatchState):
    def feed_payment(self, kind: str, pay: Payment, cust: Customer) -> None:
        self.feed_row(kind, cust.customer_no, pay.amount, pay.business_date, owing_of(cust.bills.values()),
                      cust.prepaid, payment_id=pay.ref, debit_id=pay.debit_id, bank_code=pay.bank_code,
                      channel=pay.channel)

    def feed_reversal(self, source: str, pay: Payment, cust: Customer, rev, bd: date) -> None:
        self.feed_row(REVERSAL_KINDS[source], cust.customer_no, -pay.amount, bd, owing_of(cust.bills.values()),
                      cust.prepaid, payment_id=pay.ref, reversal_id=rev, debit_id=pay.debit_id,
                      bank_code=pay.bank_code, channel=pay.channel)

    def feed_row(self, kind: str, customer_no: str, amount: int, bd: date, owing: int, prepaid: int,
                 bill: Bill | None = None, **refs) -> None:
        """A feed row of this batch (numbered when written). ``owing``/``prepaid``: the customer's,
        after the change; ``bill``: the one bill it concerns, if one."""
        due = max(0, owing - prepaid)
        self.rows["billing_feed"].append({
            "at": self.now, "business_date": bd, "kind": kind, "customer_no": customer_no,
            "bill_id": bill.bill_id if bill else None, "amount_fen": amount,
            **{ref: refs.get(ref) for ref in ("payment_id", "reversal_id", "debit_id", "refund_id",
                                              "prepaid_movement_id", "correction_bill_id", "bank_code", "channel")},
            "bill_owing_fen": max(0, bill.owing) if bill else None,
            "bill_paid": yes(bill.owing <= 0) if bill else None,
            "customer_owing_fen": owing, "prepaid_balance_fen": prepaid, "customer_due_fen": due,
            "customer_paid": yes(due == 0)})


def feed_rows(rows: list[dict]) -> list[dict]:
    """The batch's feed rows with their references' ids (reserved by now) in place of ``New``."""
    return [{k: resolved(v) for k, v in row.items()} for row in rows]
