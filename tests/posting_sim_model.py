"""The posting simulation's reference ledger: what each bank request should do, decided from
the rules in docs/ledger.md and docs/spec/INTERFACE.md §4.4, §4.5 and §4.7, in plain Python and
in memory, one request after another.

The simulation (``posting_sim``) feeds the real posting path and this model the same requests;
the real answers must be the model's and the real ledger's rows the model's state. The model
never looks at the database, except for the receipt numbers the database's ids make
(``learn_receipt``): a payment's receipt is whatever its row says, once, for ever.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime

from config.clock import Clock
from ledger.ids import bank_number, id_year
from ledger.posting import METHODS, CounterPayment, PaymentReversal


@dataclass(frozen=True)
class Expected:
    """An answer: response code, fields (a payment's receipt comes from ``payment``), replayed."""
    code: str
    fields: dict = field(default_factory=dict)
    replayed: bool = False
    payment: int | None = None        # the model payment whose receipt number the answer carries


NO_ANSWER = Expected("")              # the outcome could not be known in time: nothing is sent
NOT_APPLIED = Expected("96")


@dataclass
class Bill:
    bill_id: str
    period: str
    due_date: date
    principal: int
    penalty: int
    allocated: int = 0

    @property
    def owing(self) -> int:
        return self.principal + self.penalty - self.allocated

    def owing_split(self) -> tuple[int, int]:
        """(principal, penalty) still owed: money paid on a bill goes to its penalty first."""
        penalty = max(0, self.penalty - self.allocated)
        return self.owing - penalty, penalty

    def sort_key(self):
        return (self.period, self.due_date, self.bill_id)


@dataclass
class Customer:
    customer_no: str
    status: str = "A"
    prepay: str = "Y"
    bills: list[Bill] = field(default_factory=list)
    prepaid: int = 0
    history: list[tuple[int | None, int]] = field(default_factory=list)   # (payment, amount) of each prepaid movement

    def open_bills(self) -> list[Bill]:
        return sorted((b for b in self.bills if b.owing > 0), key=Bill.sort_key)


@dataclass
class Payment:
    ref: int
    identity: tuple                   # (bank, year, field 7, field 11)
    customer_no: str
    amount: int
    business_date: date
    allocs: list[tuple[Bill, int]] = field(default_factory=list)   # paid with its own money
    used: list[tuple[Bill, int]] = field(default_factory=list)     # paid with prepaid it used
    excess: int = 0
    reversed: bool = False
    receipt: str | None = None


@dataclass
class Stored:
    digest: str
    answer: Expected


def identity(p) -> tuple:
    return (p.bank_code, id_year(p.transmitted, p.received_at), p.transmitted, p.stan)


def orig_identity(r: PaymentReversal) -> tuple:
    return (id_year(r.orig_transmitted, r.received_at), r.orig_transmitted, r.orig_stan)


class Model:
    def __init__(self, banks: set[str], customers: list[Customer], clock: Clock | None = None):
        self.clock = clock or Clock()
        self.banks = set(banks)
        self.customers = {c.customer_no: c for c in customers}
        self.known: dict[tuple, Stored] = {}            # request identity -> its stored answer
        self.payments: list[Payment] = []
        self.by_identity: dict[tuple, list[Payment]] = {}   # (year, 7, 11) -> payments
        self.orphans: dict[tuple, list[str]] = {}       # (year, 7, 11) -> banks that reversed it first
        self.rrns: dict[tuple, tuple] = {}              # (bank, business date, RRN) -> the payment it belongs to
        self.undone: set[int] = set()                   # payments reversed
        self.closed: set[tuple] = set()                 # (bank, business date) reconciled

    # ------------------------------------------------------------------ what the bank is owed
    def add_bill(self, customer_no: str, bill: Bill) -> None:
        self.customers[customer_no].bills.append(bill)

    def apply_prepaid(self, customer_no: str) -> None:
        """A billing import: the prepaid balance pays unpaid bills, oldest first, whole bills only,
        stopping at the first it does not cover (ledger.posting.apply_prepaid); such a use names no
        payment."""
        cust = self.customers[customer_no]
        for bill in cust.open_bills():
            if cust.prepaid <= 0 or bill.owing > cust.prepaid:
                break
            cust.history.append((None, -bill.owing))
            cust.prepaid -= bill.owing
            bill.allocated += bill.owing

    def due(self, customer_no: str) -> int:
        cust = self.customers.get(customer_no)
        if cust is None:
            return 0
        return max(0, sum(b.owing for b in cust.open_bills()) - cust.prepaid)

    def inquire(self, customer_no: str) -> tuple:
        """(code, bills [(period, principal, penalty)], total due, prepaid) as ``ledger.inquiry`` says."""
        cust = self.customers.get(customer_no)
        if cust is None:
            return ("14", [], 0, 0)
        if cust.status != "A":
            return ("B2", [], 0, 0)
        return ("00", [(b.period, *b.owing_split()) for b in cust.open_bills()], self.due(customer_no), cust.prepaid)

    def close(self, bank: str, business_date: date) -> None:
        """The bank's file for that date reconciled: its payments can no longer be reversed (§4.5)."""
        self.closed.add((bank, business_date))

    def learn_receipt(self, payment: Payment, receipt: str) -> None:
        payment.receipt = payment.receipt or receipt

    # ------------------------------------------------------------------ answers
    def lookup(self, p) -> Expected:
        """What settling an unknown commit finds: the stored answer of the request, else 96."""
        stored = self.known.get(identity(p))
        if stored is None or stored.digest != p.digest:
            return NOT_APPLIED
        return replace(stored.answer, replayed=False)

    def decide(self, p) -> Expected:
        seen = self.known.get(identity(p))
        if seen is not None:
            return replace(seen.answer, replayed=True) if seen.digest == p.digest else Expected("94")
        if isinstance(p, CounterPayment):
            return self._payment(p)
        return self._reversal(p)

    def _remember(self, p, answer: Expected, owner: tuple) -> Expected:
        self.known[identity(p)] = Stored(p.digest, answer)
        key = (p.bank_code, self.clock.business_date(p.received_at), p.rrn)
        if p.rrn and key not in self.rrns:
            self.rrns[key] = owner
        return answer

    def _rrn_taken(self, p, owner: tuple) -> bool:
        key = (p.bank_code, self.clock.business_date(p.received_at), p.rrn)
        return bool(p.rrn) and key in self.rrns and self.rrns[key] != owner

    def _payment(self, p: CounterPayment) -> Expected:
        ident = identity(p)
        bd = self.clock.business_date(p.received_at)
        fields = {"business_date": bd.isoformat()}

        def decline(code: str) -> Expected:
            return self._remember(p, Expected(code, dict(fields)), ident[1:])

        if p.bank_code not in self.banks:
            return decline("58")
        if self._rrn_taken(p, ident[1:]):
            return decline("94")
        if any(bank_number(b) == bank_number(p.bank_code) for b in self.orphans.get(ident[1:], ())):
            return decline("12")
        if p.method not in METHODS or (p.method == "03" and not p.cheque_no):
            return decline("30")
        cust = self.customers.get(p.customer_no)
        if cust is None:
            return decline("14")
        if cust.status != "A":
            return decline("B2")
        if p.amount <= 0:
            return decline("13")
        due = self.due(p.customer_no)
        if due == 0 and cust.prepay != "Y":
            return decline("B1")
        if p.amount < due:
            return decline("13")
        pay = Payment(len(self.payments), ident, cust.customer_no, p.amount, bd)
        self.payments.append(pay)
        self.by_identity.setdefault(ident[1:], []).append(pay)
        self._pay_bills(pay, cust)
        fields["prepaid_balance"] = cust.prepaid
        return self._remember(p, Expected("00", fields, payment=pay.ref), ident[1:])

    @staticmethod
    def _pay_bills(pay: Payment, cust: Customer) -> None:
        """Prepaid first, then the payment's own money, oldest bill first; the rest is prepaid."""
        left = pay.amount
        for bill in cust.open_bills():
            want = bill.owing
            if cust.prepaid > 0:
                take = min(want, cust.prepaid)
                cust.prepaid -= take
                cust.history.append((pay.ref, -take))
                pay.used.append((bill, take))
                bill.allocated += take
                want -= take
            take = min(want, left)
            if take > 0:
                pay.allocs.append((bill, take))
                bill.allocated += take
                left -= take
        if left:
            cust.prepaid += left
            cust.history.append((pay.ref, left))
        pay.excess = left

    def _reversal(self, r: PaymentReversal) -> Expected:
        ident = identity(r)
        okey = orig_identity(r)
        bd = self.clock.business_date(r.received_at)
        fields = {"business_date": bd.isoformat()}
        own = bank_number(r.orig_bank_code) == bank_number(r.bank_code)
        owner = okey if own else ident[1:]

        def decline(code: str) -> Expected:
            return self._remember(r, Expected(code, dict(fields)), owner)

        if self._rrn_taken(r, owner):
            return decline("94")
        found = [x for x in self.by_identity.get(okey, ())
                 if bank_number(x.identity[0]) == bank_number(r.orig_bank_code)]
        if not found:
            if own and r.bank_code not in self.orphans.get(okey, ()):
                self.orphans.setdefault(okey, []).append(r.bank_code)
            return decline("25")
        pay = found[0]
        if bank_number(r.bank_code) != bank_number(pay.identity[0]):
            return decline("12")
        if r.amount != pay.amount:
            return decline("13")
        if r.customer_no and r.customer_no != pay.customer_no:
            return decline("12")
        if pay.reversed:
            return self._remember(r, Expected("00", fields, payment=pay.ref), owner)
        if (pay.identity[0], pay.business_date) in self.closed:
            return decline("12")
        cust = self.customers[pay.customer_no]
        if self._created_prepaid_used(pay, cust):
            return decline("12")
        self._reverse(pay, cust)
        fields["prepaid_balance"] = cust.prepaid
        return self._remember(r, Expected("00", fields, payment=pay.ref), owner)

    def _created_prepaid_used(self, pay: Payment, cust: Customer) -> bool:
        """§4.5: the balance has been below what pay made at some time since, reversed payments left out."""
        if not pay.excess:
            return False
        balance, low = 0, None
        for ref, amount in cust.history:
            if ref in self.undone:
                continue
            balance += amount
            if ref == pay.ref:
                low = balance
            elif low is not None:
                low = min(low, balance)
        return low is None or low < pay.excess

    def _reverse(self, pay: Payment, cust: Customer) -> None:
        for bill, amount in pay.allocs:
            bill.allocated -= amount
        for bill, amount in pay.used:
            bill.allocated -= amount
            cust.prepaid += amount
            cust.history.append((pay.ref, amount))
        if pay.excess:
            cust.prepaid -= pay.excess
            cust.history.append((pay.ref, -pay.excess))
        pay.reversed = True
        self.undone.add(pay.ref)

    # ------------------------------------------------------------------ what the ledger should hold
    def allocated(self) -> dict[str, int]:
        return {b.bill_id: b.allocated for c in self.customers.values() for b in c.bills}

    def prepaid(self) -> dict[str, int]:
        return {c.customer_no: c.prepaid for c in self.customers.values()}

    def stored_codes(self) -> dict[tuple, tuple[str, str]]:
        return {ident: (s.digest, s.answer.code) for ident, s in self.known.items()}

    def orphan_keys(self) -> set[tuple]:
        return {(bank, *key) for key, banks in self.orphans.items() for bank in banks}


def received(p, at: datetime):
    """The same request arriving again at ``at`` (a repeat: identity and content unchanged)."""
    return replace(p, received_at=at)
