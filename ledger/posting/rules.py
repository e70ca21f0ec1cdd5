"""How money is allocated and undone: the rules every posting kind moves money by.

Two rules apply a prepaid balance to bills, side by side here, each for its reason:
- ``pay_bills`` (a payment arrives: counter, debit, bank file): the prepaid balance first, then
  the payment, oldest bill first, paying a bill in part when the money runs out (a debit pays
  the amounts it names); what is left of the payment goes into prepaid.
- ``pay_whole_bills`` (no payment: bills arrive or change - imports, corrections): the balance
  alone, oldest first, whole bills only (bills are paid whole), stopping at the first bill it
  does not cover, so that a newer bill is never paid while an older one stays unpaid.

``reverse`` undoes a payment exactly (docs/spec/INTERFACE.md §4.5) when it still can be.
"""
from __future__ import annotations

from datetime import date

from config import notices
from ledger.journal import PREPAID, RECEIVABLE, bank_clearing
from ledger.posting.feed import FeedRows, owing_of
from ledger.posting.model import Bill, Customer, New, Payment
from ledger.posting.queries import statements


class Rules(FeedRows):
    def pay_bills(self, pay: Payment, cust: Customer, open_bills: list[Bill], bd: date, actor: str,
                  use_prepaid: bool, amounts: dict[str, int] | None = None) -> list[str]:
        """Allocate pay (and, first, the customer's prepaid balance) to bills, oldest first;
        the rest of pay goes into prepaid. Returns the periods paid."""
        left = pay.amount
        periods: list[str] = []
        for bill in open_bills:
            want = bill.owing if amounts is None else min(bill.owing, amounts.get(bill.bill_id, 0))
            if want <= 0:
                continue
            if use_prepaid and cust.prepaid > 0:
                take = min(want, cust.prepaid)
                move = New()   # names the payment, whose reversal gives the prepaid back (§4.5)
                self.rows["prepaid_movements"].append(self._move(move, cust.customer_no, -take, "applied",
                                                                 pay.ref, None, bill.bill_id))
                self.rows["allocations"].append(self._alloc(bill.bill_id, take, None, None, move))
                self.entry("prepaid_applied", "prepaid_movement", move, bd, actor,
                           [(PREPAID, take, cust.customer_no), (RECEIVABLE, -take, cust.customer_no)])
                cust.move_prepaid(pay.ref, -take)
                pay.used.append((bill.bill_id, take))
                bill.allocated += take
                want -= take
            take = min(want, left)
            if take > 0:
                self.rows["allocations"].append(self._alloc(bill.bill_id, take, pay.ref, None, None))
                pay.allocs.append((bill.bill_id, take))
                bill.allocated += take
                left -= take
            if bill.owing == 0:
                periods.append(bill.period)
        if left:
            self.rows["prepaid_movements"].append(self._move(New(), cust.customer_no, left, "excess", pay.ref,
                                                             None, None))
            cust.move_prepaid(pay.ref, left)
        pay.excess = left
        clearing = bank_clearing(pay.bank_code)
        self.entry("payment", "payment", pay.ref, bd, actor,
                   [(clearing, pay.amount, cust.customer_no), (RECEIVABLE, -(pay.amount - left), cust.customer_no),
                    (PREPAID, -left, cust.customer_no)])
        return periods

    def pay_whole_bills(self, cust_no: str, balance: int, open_bills: list[Bill], bd, actor: str,
                        paid: list[tuple[str, str, int]]) -> int:
        """Pay bills (oldest first) from the prepaid balance, whole bills only, stopping at the first
        it does not cover; each bill paid is appended to ``paid``. Returns the balance left.
        ``open_bills`` are all the customer's open bills (what it owes after goes to the feed)."""
        owing = owing_of(open_bills)
        for bill in sorted(open_bills, key=Bill.sort_key):
            if bill.owing > balance:
                break
            take = bill.owing
            balance -= take
            move = New()
            self.rows["prepaid_movements"].append(self._move(move, cust_no, -take, "applied", None, None,
                                                             bill.bill_id))
            self.rows["allocations"].append(self._alloc(bill.bill_id, take, None, None, move))
            self.entry("prepaid_applied", "bill", bill.bill_id, bd, actor,
                       [(PREPAID, take, cust_no), (RECEIVABLE, -take, cust_no)])
            bill.allocated += take
            owing -= take
            self.feed_row("prepaid_applied", cust_no, take, bd, owing, balance, bill, prepaid_movement_id=move)
            paid.append((cust_no, bill.bill_id, take))
        return balance

    def reverse(self, pay: Payment, cust: Customer, bd: date, actor: str, source: str,
                identity: tuple | None, reason: str) -> str:
        """Post the reversal of pay, which leaves bills and prepaid balance as they were before it
        (§4.5); returns why it cannot be done ('' when done)."""
        if cust.history is None and not isinstance(pay.ref, New):
            self.load_history(pay, cust)
        problem = self.not_undoable(pay, cust)
        if problem:
            return problem
        rev = New()
        year, transmitted, stan = identity or (None, None, None)
        self.rows["reversals"].append({
            "reversal_id": rev, "payment_id": pay.ref, "bank_code": pay.bank_code, "id_year": year,
            "transmitted": transmitted, "stan": stan, "amount": pay.amount, "business_date": bd, "source": source,
            "reason": reason[:200], "created_at": self.now})
        for bill_id, amount in pay.allocs:
            self.rows["allocations"].append(self._alloc(bill_id, -amount, pay.ref, rev, None))
            self.unallocate(bill_id, amount)
        for bill_id, amount in pay.used:   # the prepaid it used goes back, and its bills owe it again
            move = New()
            self.rows["prepaid_movements"].append(self._move(move, cust.customer_no, amount, "reversal", pay.ref,
                                                             rev, bill_id))
            self.rows["allocations"].append(self._alloc(bill_id, -amount, None, rev, move))
            self.unallocate(bill_id, amount)
        used = sum(amount for _, amount in pay.used)
        cust.move_prepaid(pay.ref, used)
        if pay.excess:
            self.rows["prepaid_movements"].append(self._move(New(), cust.customer_no, -pay.excess, "reversal",
                                                             pay.ref, rev, None))
            cust.move_prepaid(pay.ref, -pay.excess)
        on_bills = pay.amount - pay.excess
        self.entry("reversal", "reversal", rev, bd, actor,
                   [(bank_clearing(pay.bank_code), -pay.amount, cust.customer_no),
                    (RECEIVABLE, on_bills + used, cust.customer_no), (PREPAID, pay.excess - used, cust.customer_no)])
        self.feed_reversal(source, pay, cust, rev, bd)
        self.notice(cust, "reversal", "reversal", rev, notices.payment_reversed(cust.customer_no, pay.amount))
        self.audit(actor, "payment.reverse", "payment", pay.ref, reversal=rev, amount=pay.amount, source=source,
                   prepaid_returned=used, reason=reason)
        pay.reversed = True
        self.undone.add(pay.ref)
        return ""

    def unallocate(self, bill_id: str, amount: int) -> None:
        bill = self.bills.get(bill_id)
        if bill is not None:
            bill.allocated -= amount

    def not_undoable(self, pay: Payment, cust: Customer) -> str:
        """Why reversing pay would not restore what it changed ('' when it would)."""
        if any(b in self.bills and self.bills[b].cancelled for b, _ in pay.allocs + pay.used):
            return "a bill this payment paid has been corrected since; an operator must reverse it"
        if self.created_prepaid_used(pay, cust):
            return ("the prepaid balance this payment created has since paid other bills; "
                    "reverse through reconciliation")
        return ""

    def created_prepaid_used(self, pay: Payment, cust: Customer) -> bool:
        """Whether the prepaid balance has been below what pay put into it at any time since pay.
        Payments reversed since are left out of the history: each reversal undid its payment exactly."""
        if not pay.excess:
            return False
        balance, low = 0, None
        for ref, amount in cust.prepaid_history():
            if ref is not None and ref in self.undone:
                continue
            balance += amount
            if ref == pay.ref:     # its movements, the excess last: the balance right after it
                low = balance
            elif low is not None:
                low = min(low, balance)
        return low is None or low < pay.excess

    def load_history(self, pay: Payment, cust: Customer) -> None:
        """For a payment to reverse that no prefetch read (reconciliation's red reversal)."""
        pay.used, pay.excess = [], 0
        rows = self.q(statements(self.conn.dialect.name).prepaid_history, custs=[cust.customer_no]).all()
        self.add_history(rows, [pay])
        self.load_bills(set(), {b for b, _ in pay.allocs + pay.used} - set(self.bills))

    # ---------------------------------------------------------------- rows
    def _alloc(self, bill_id, amount, payment, reversal, move, correction=None) -> dict:
        return {"bill_id": bill_id, "amount": amount, "payment_id": payment, "reversal_id": reversal,
                "prepaid_movement_id": move, "correction_bill_id": correction, "created_at": self.now}

    def _move(self, ref, customer_no, amount, kind, payment, reversal, bill_id, refund=None) -> dict:
        return {"id": ref, "customer_no": customer_no, "amount": amount, "kind": kind, "payment_id": payment,
                "reversal_id": reversal, "bill_id": bill_id, "refund_id": refund, "created_at": self.now}
