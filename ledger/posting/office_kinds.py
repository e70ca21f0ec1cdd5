"""Deciding the back office's kinds: reconciliation's bank-file payment (补账) and red reversal, a
refund, a bill correction, and the prepaid application after an import.

They are decided one at a time as they come (no prefetch round): each reads what it needs under
its customer's lock, by the same rules and into the same rows as the banks' kinds (source 'R',
the operator as actor). A refusal is an outcome with code ``12`` and the reason as detail;
nothing of it is written.
"""
from __future__ import annotations

from sqlalchemy import func, select

from ledger.journal import PREPAID, RECEIVABLE, REFUNDS_PAYABLE
from ledger.posting.bank_kinds import BankKinds
from ledger.posting.kinds import (
    METHODS, BankFilePayment, BillCorrection, PrepaidApplication, PrepaidRefund, RedReversal,
)
from ledger.posting.feed import owing_of
from ledger.posting.model import New, Payment, Result
from ledger.posting.queries import open_bill_rows, prepaid_balance, prepaid_balances
from ledger.posting.writes import bill_lines
from ledger.schema import allocations, payments, prepaid_movements, reversals


def refused(detail: str) -> tuple[Result, bool]:
    return Result("12", {}, detail), False


class OfficeKinds(BankKinds):
    def bank_file_payment(self, p: BankFilePayment) -> tuple[Result, bool]:
        """The customer must exist and be active, and the amount must cover what was due then as
        the gateway would have required (else the bank's record and ours disagree about more than
        a lost message: refused)."""
        if p.method not in METHODS:
            return refused(f"payment method must be 01, 02 or 03, not {p.method!r}")
        if p.method == "03" and not p.cheque_no:
            return refused("a cheque payment (method 03) needs the cheque number")
        if p.amount <= 0:
            return refused("amount must be greater than 0")
        if problem := self.identity_taken(p):
            return refused(problem)
        self.lock({p.customer_no})
        cust = self.customers.get(p.customer_no)
        if cust is None:
            return refused(f"no customer {p.customer_no}")
        if cust.status != "A":
            return refused(f"customer {p.customer_no} is {'suspended' if cust.status == 'S' else 'closed'}")
        cust.prepaid = prepaid_balance(self.conn, p.customer_no)
        self.load_bills({p.customer_no}, set())
        open_bills = cust.open_bills()
        due = max(0, sum(b.owing for b in open_bills) - cust.prepaid)
        if due == 0 and cust.prepay_allowed != "Y":
            return refused("nothing is due and the customer may not prepay: the amount does not check out")
        if p.amount < due:
            return refused(f"amount {p.amount} is less than the {due} due: the amount does not check out")
        bd = p.business_date
        pay = Payment(New(), p.bank_code, "C", p.customer_no, p.amount, bd, None)
        self.rows["payments"].append({
            "payment_id": pay.ref, "channel": "C", "bank_code": p.bank_code, "customer_no": p.customer_no,
            "id_year": int(p.transmitted[:4]), "transmitted": p.transmitted[4:], "stan": p.stan, "rrn": p.rrn,
            "business_date": bd, "amount": p.amount, "method": p.method,
            "cheque_no": p.cheque_no if p.method == "03" else None, "receipt_no": pay,
            "terminal_id": (p.terminal_id or None) and p.terminal_id[:8], "branch_id": None, "debit_id": None,
            "source": "R", "created_at": self.now})
        periods = self.pay_bills(pay, cust, open_bills, bd, p.actor, use_prepaid=True)
        self.feed_payment("bank_file_payment", pay, cust)
        self.notice(cust, "payment", "payment", pay.ref, self.payment_text(cust, pay, periods))
        self.audit(p.actor, "payment.post", "payment", pay.ref, amount=p.amount, customer_no=p.customer_no,
                   rrn=p.rrn, stan=p.stan, transmitted=p.transmitted[4:], method=p.method, excess=pay.excess,
                   source="R", reason=p.reason)
        return Result("00", {}, "", pay, ids={"payment_id": pay.ref}), False

    def identity_taken(self, p: BankFilePayment) -> str:
        """Why a bank-file payment's RRN or field 7/11 identity is another payment's ('' if neither)."""
        pc = payments.c
        taken = self.conn.execute(select(pc.payment_id).where(
            pc.bank_code == p.bank_code, pc.channel == "C", pc.business_date == p.business_date,
            pc.rrn == p.rrn)).first()
        if taken is not None:
            return f"RRN {p.rrn} of bank {p.bank_code} on {p.business_date} is already payment {taken[0]}"
        taken = self.conn.execute(select(pc.payment_id).where(
            pc.bank_code == p.bank_code, pc.channel == "C", pc.id_year == int(p.transmitted[:4]),
            pc.transmitted == p.transmitted[4:], pc.stan == p.stan)).first()
        if taken is not None:
            return f"a payment with this field 7/11 identity exists already: payment {taken[0]}"
        return ""

    def red_reversal(self, r: RedReversal) -> tuple[Result, bool]:
        """Dated today's business date, although the payment's own may be closed (reconciliation)."""
        row = self.conn.execute(select(payments).where(payments.c.payment_id == r.payment_id)).first()
        if row is None:
            return refused(f"no payment {r.payment_id}")
        self.lock({row.customer_no})
        if self.conn.execute(select(reversals.c.reversal_id).where(reversals.c.payment_id == r.payment_id)).first():
            return refused(f"payment {r.payment_id} is already reversed")
        cust = self.customers[row.customer_no]
        cust.prepaid = prepaid_balance(self.conn, row.customer_no)
        pay = Payment(row.payment_id, row.bank_code, row.channel, row.customer_no, int(row.amount),
                      row.business_date, row.receipt_no, row.debit_id)
        al, pm = allocations.c, prepaid_movements.c
        pay.allocs = [(a.bill_id, int(a.amount)) for a in self.conn.execute(
            select(al.bill_id, al.amount).where(al.payment_id == r.payment_id, al.reversal_id.is_(None),
                                                al.correction_bill_id.is_(None)).order_by(al.id))]
        pay.excess = int(self.conn.execute(select(func.coalesce(func.sum(pm.amount), 0))
                                           .where(pm.payment_id == r.payment_id, pm.kind == "excess")).scalar_one())
        self.load_bills({row.customer_no}, {b for b, _ in pay.allocs})   # all its open bills: for the feed
        problem = self.reverse(pay, cust, self.clock.business_date(self.now), r.actor, "R", None, r.reason)
        if problem:
            return refused(problem)
        return Result("00", {}, ids={"reversal_id": self.rows["reversals"][-1]["reversal_id"]}), False

    def prepaid_refund(self, f: PrepaidRefund) -> tuple[Result, bool]:
        no, bd, move = f.customer_no, self.clock.business_date(self.now), New()
        self.rows["prepaid_movements"].append(self._move(move, no, -f.amount, "refund", None, None, None,
                                                         refund=f.refund_id))
        self.entry("refund", "refund", str(f.refund_id), bd, f.actor,
                   [(PREPAID, f.amount, no), (REFUNDS_PAYABLE, -f.amount, no)])
        cust = self.customer_with_bills(no)
        cust.move_prepaid(None, -f.amount)
        self.feed_row("refund", no, -f.amount, bd, owing_of(cust.bills.values()), cust.prepaid,
                      refund_id=f.refund_id, prepaid_movement_id=move)
        self.audit(f.actor, "refund.pay", "refund", f.refund_id, customer_no=no, amount=f.amount, reason=f.reason)
        return Result("00", {}), False

    def bill_correction(self, c: BillCorrection) -> tuple[Result, bool]:
        no, bd, actor = c.replacement["customer_no"], self.clock.business_date(self.now), c.actor
        for bill in (c.reversing, c.replacement):
            principal, penalty = int(bill["principal"]), int(bill["penalty"])
            self.entry("bill_reversal" if principal < 0 else "bill", "bill", bill["bill_id"], bd, actor,
                       bill_lines(principal, penalty, no))
        balance = prepaid_balance(self.conn, no)
        bills = self.open_bills_of([no]).get(no, [])   # the replacement's among them; the original is cancelled
        if c.paid > 0:   # what was paid on the original goes into prepaid
            move = New()
            self.rows["prepaid_movements"].append(self._move(move, no, c.paid, "correction", None, None,
                                                             c.original_bill_id))
            self.rows["allocations"].append(self._alloc(c.original_bill_id, -c.paid, None, None, move,
                                                        correction=c.reversing["bill_id"]))
            self.entry("correction", "bill", c.original_bill_id, bd, actor,
                       [(RECEIVABLE, c.paid, no), (PREPAID, -c.paid, no)])
            balance += c.paid
            self.feed_row("correction", no, -c.paid, bd, owing_of(bills), balance, self.cancelled(c.original_bill_id),
                          prepaid_movement_id=move, correction_bill_id=c.reversing["bill_id"])
        paid: list[tuple[str, str, int]] = []
        balance = self.pay_whole_bills(no, balance, bills, bd, actor, paid)
        return Result("00", {"paid_bills": [bill_id for _, bill_id, _ in paid], "prepaid_balance": balance}), False

    def prepaid_application(self, a: PrepaidApplication) -> tuple[Result, bool]:
        balances = prepaid_balances(self.conn, a.customer_nos)
        funded = sorted(no for no, balance in balances.items() if balance > 0)
        paid: list[tuple[str, str, int]] = []
        for no, bills in sorted(self.open_bills_of(funded).items()):
            self.pay_whole_bills(no, balances[no], bills, a.business_date, a.actor, paid)
        return Result("00", {"paid": paid}), False

    def customer_with_bills(self, customer_no: str):
        """The customer (locked), its prepaid balance and all its open bills, for a kind that reads
        nothing else (a refund). A customer the batch has read already is as the batch left it."""
        if customer_no not in self.customers:
            self.lock({customer_no})
            self.customers[customer_no].prepaid = prepaid_balance(self.conn, customer_no)
        if customer_no not in self.all_bills_read:
            self.load_bills({customer_no}, set())
        return self.customers[customer_no]

    def cancelled(self, bill_id: str):
        """A corrected (cancelled) bill, as the batch knows it: it owes nothing."""
        self.load_bills(set(), {bill_id})
        return self.bills[bill_id]

    def open_bills_of(self, customer_nos) -> dict[str, list]:
        """Each customer's open bills, as this batch knows them (read for any number of customers)."""
        rows = open_bill_rows(self.conn, customer_nos) if customer_nos else []
        self.add_bills(rows)
        self.all_bills_read.update(customer_nos)
        out: dict[str, list] = {}
        for r in rows:
            out.setdefault(r.customer_no, []).append(self.bills[r.bill_id])
        return out
