"""Posting counter payments, payment reversals and direct-debit results to the ledger.

``apply_batch(conn, postings, calendar, now)`` decides and writes a whole batch of postings in
the caller's transaction with a few IN-queries up front, the decisions in Python against the
batch's in-memory state (postings for one customer see each other in order), and one
``executemany`` per table at the end. ``GroupCommitter`` (ledger.group_commit) runs it on its own
thread, one transaction per batch; ``post`` runs it synchronously (tests, the debit engine).

Rules where docs/spec/INTERFACE.md is silent are in docs/ledger.md; the main ones are in the code below.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from types import SimpleNamespace
from typing import Callable, Iterable, Sequence, Union

from sqlalchemy import exists, func, literal_column, select
from sqlalchemy.orm import aliased

from ledger.audit import audit_row, bank_actor
from ledger.bulk import Writes, in_list, select_many
from ledger.business_date import BusinessCalendar, utcnow
from ledger.ids import bank_number, id_year, receipt_no, reserve_ids_many
from ledger.journal import PREPAID, RECEIVABLE, Entry, bank_clearing
from ledger.money import AMOUNT_LIMIT, fits
from ledger import notices
from ledger.schema import (
    audit_log, journal_entries, journal_lines, allocations, bank_requests, banks, bills, business_day_closures, customers, debit_attempts,
    debit_bills, debits, orphan_reversals, outbox, payments, prepaid_movements, request_rrns, reversals,
)

PAYMENT_CODE = "500000"
METHODS = ("01", "02", "03")
DEBIT_METHOD = "10"
DEBIT_ACTOR = "system:debit-engine"


# --------------------------------------------------------------------------------------------
# What the gateway and the debit engine hand in, and what they get back

@dataclass(frozen=True)
class CounterPayment:
    """A 0200/500000 from a bank's counter. Money in fen, datetimes aware (UTC)."""
    bank_code: str
    transmitted: str            # field 7 MMDDhhmmss
    stan: str                   # field 11
    rrn: str                    # field 37
    customer_no: str
    amount: int
    method: str                 # PM 01 / 02 / 03
    cheque_no: str | None
    terminal_id: str
    branch_id: str
    digest: str                 # of the fields that define the request (the gateway computes it)
    received_at: datetime
    mti: str = "0200"


@dataclass(frozen=True)
class PaymentReversal:
    """A 0400/0420 (0401/0421 normalised by the caller) cancelling a counter payment."""
    bank_code: str
    transmitted: str
    stan: str
    orig_bank_code: str         # field 90's original field 32 (compared as a number)
    orig_transmitted: str
    orig_stan: str
    amount: int
    customer_no: str | None
    digest: str
    received_at: datetime
    mti: str = "0420"
    rrn: str = ""               # field 37; "" when not from a bank message (not checked)


@dataclass(frozen=True)
class DebitResult:
    """What became of a direct debit (the debit engine reports it)."""
    debit_id: int
    result: str                 # approved | declined | unknown | reversed
    at: datetime
    response_code: str | None = None   # the bank's field 39
    approval_code: str | None = None   # field 38 on approval
    detail: str = ""
    actor: str = DEBIT_ACTOR


Posting = Union[CounterPayment, PaymentReversal, DebitResult]


@dataclass(frozen=True)
class Outcome:
    response_code: str
    fields: dict = field(default_factory=dict)   # receipt_no, prepaid_balance, business_date, ...
    detail: str = ""                             # plain words, becomes field 48 ER
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.response_code == "00"


def system_error(detail: str = "database unavailable: nothing was applied") -> Outcome:
    return Outcome("96", {}, detail[:200])


# --------------------------------------------------------------------------------------------
# In-memory state of a batch

class New:
    """The id of a row this batch inserts; set just before the inserts (ledger.ids.reserve_ids)."""
    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id: int | None = None

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"New({self.id})"


def _v(x):
    return x.id if isinstance(x, New) else x


class _Bill:
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


class _Customer:
    __slots__ = ("customer_no", "name", "status", "prepay_allowed", "mobile", "prepaid", "bills", "history", "moves")

    def __init__(self, row) -> None:
        self.customer_no = row.customer_no
        self.name = row.customer_name
        self.status = row.status
        self.prepay_allowed = row.prepay_allowed
        self.mobile = row.mobile
        self.prepaid = 0
        self.bills: dict[str, _Bill] = {}
        self.history: list[tuple] | None = None     # (payment ref or None, amount) of the stored prepaid movements
        self.moves: list[tuple] = []                # the same, of the movements this batch makes

    def open_bills(self) -> list[_Bill]:
        return sorted((b for b in self.bills.values() if b.owing > 0), key=_Bill.sort_key)

    def move_prepaid(self, ref, amount: int) -> None:
        self.prepaid += amount
        self.moves.append((ref, amount))

    def prepaid_history(self) -> list[tuple]:
        """Every prepaid movement in order; without the stored ones, the balance they left as one."""
        if self.history is not None:
            return self.history + self.moves
        return [(None, self.prepaid - sum(amount for _, amount in self.moves))] + self.moves


class _Payment:
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
        return self.receipt or receipt_no(self.business_date, _v(self.ref))


class _Result:
    """An outcome being built; receipt numbers are filled in once ids are reserved."""
    __slots__ = ("code", "fields", "detail", "payment")

    def __init__(self, code: str, fields: dict, detail: str = "", payment: _Payment | None = None):
        self.code, self.fields, self.detail, self.payment = code, fields, detail[:200], payment

    def final_fields(self) -> dict:
        if self.payment is not None and "receipt_no" not in self.fields:
            self.fields["receipt_no"] = self.payment.receipt_no()
        return self.fields


class _Batch:
    def __init__(self, conn, calendar: BusinessCalendar, now: datetime):
        self.conn, self.calendar, self.now = conn, calendar, now
        # prefetched
        self.known_requests: dict[tuple, tuple[str, _Result]] = {}
        self.known_banks: set[str] = set()
        self.used_rrns: dict[tuple, tuple | None] = {}   # (bank, channel, date, rrn) -> whose (rrn_owner)
        self.orphans: dict[tuple, list[str]] = {}      # (year, transmitted, stan) -> bank codes
        self.payments_by_identity: dict[tuple, list[_Payment]] = {}  # channel C, (year, t, s)
        self.payments_by_debit: dict[int, _Payment] = {}
        self.customers: dict[str, _Customer] = {}
        self.bills: dict[str, _Bill] = {}
        self.closed: set[tuple] = set()
        self.debits: dict[int, dict] = {}
        self.undone: set = set()   # refs of payments reversed: left out of prepaid histories
        # to write
        self.new_requests: list[tuple[tuple, object, _Result]] = []
        self.rows: dict[str, list[dict]] = {t: [] for t in (
            "payments", "reversals", "prepaid_movements", "allocations", "outbox", "audit", "orphans",
            "debit_updates", "debit_attempts", "request_rrns")}
        self.entries: list[tuple] = []   # (kind, ref_type, ref, business_date, actor, lines)
        self.notices: list[tuple] = []   # (customer, kind, ref prefix, ref, text)

    # ---------------------------------------------------------------- prefetch
    def q(self, stmt, **params):
        return self.conn.execute(stmt, params)

    def prefetch(self, postings: Sequence[Posting]) -> None:
        """Everything the batch's decisions need, in a few rounds of set queries (``select_many``:
        one round trip each on PostgreSQL). Keys of several columns are fetched by a superset (IN
        per column) and matched exactly here.

        Customers whose money this batch may move are locked FOR UPDATE, in key order (PostgreSQL,
        Oracle; SQLite's BEGIN IMMEDIATE already made this transaction the only writer), BEFORE
        anything that decides is read: the statements of a round run in order, the lock first. A
        reversal locks its CN, so a payment and its reversal arriving at once through two processes
        are serialized (no orphan slipping past its original)."""
        counter = [p for p in postings if isinstance(p, CounterPayment)]
        revs = [p for p in postings if isinstance(p, PaymentReversal)]
        dres = [p for p in postings if isinstance(p, DebitResult)]
        st = _statements(self.conn.dialect.name)
        if dres:  # round 1: the debits, to know whose customers to lock
            drows = self.q(st.debits, ids=sorted({d.debit_id for d in dres})).mappings().all()
            self.debits = {r["debit_id"]: dict(r) for r in drows}
        # round 2: the locks, then what the decisions read
        custs = ({p.customer_no for p in counter} | {r.customer_no for r in revs if r.customer_no}
                 | {d["customer_no"] for d in self.debits.values()})
        queries: dict[str, tuple] = {}
        if custs:
            queries["customers"] = (st.lock_customers, {"custs": sorted(custs)})
        idents = {self.identity(p) for p in counter + revs}
        if idents:
            queries["known"] = (st.known_requests, {"ts": sorted({i[2] for i in idents}),
                                                    "stans": sorted({i[3] for i in idents})})
            queries["banks"] = (st.banks, {"codes": sorted({p.bank_code for p in counter + revs})})
        request_rrns = {self.rrn_key(p) for p in counter + revs if p.rrn}
        rrn_keys = request_rrns | {(d["bank_code"], "D", self._debit_date(d, r.at), self._debit_rrn(d))
                                   for r in dres if r.result == "approved" and (d := self.debits.get(r.debit_id))}
        if rrn_keys:
            queries["rrns"] = (st.used_rrns, {"rrns": sorted({k[3] for k in rrn_keys})})
        if request_rrns:
            queries["request_rrns"] = (st.request_rrns, {"rrns": sorted({k[3] for k in request_rrns})})
        origs = {(id_year(p.transmitted, p.received_at), p.transmitted, p.stan) for p in counter}
        origs |= {self.orig_identity(r) for r in revs}
        if origs:
            queries["orphans"] = (st.orphans, {"stans": sorted({o[2] for o in origs})})
        rev_origs = {self.orig_identity(r) for r in revs}
        if rev_origs:  # the payments reversals refer to (payments never change: no lock needed)
            queries["targets"] = (st.reversal_targets, {"stans": sorted({o[2] for o in rev_origs}),
                                                        "ts": sorted({o[1] for o in rev_origs})})
        reversed_debits = sorted({r.debit_id for r in dres if r.result == "reversed"})
        if reversed_debits:
            queries["debit_payments"] = (st.debit_payments, {"ids": reversed_debits})
        if self.debits:  # the debits' state again under the customers' locks, and their rows locked
            ids = sorted(self.debits)
            queries["debits"] = (st.lock_debits, {"ids": ids})
            queries["debit_bills"] = (st.debit_bills, {"ids": ids})
        if custs:
            queries["prepaid"] = (st.prepaid, {"custs": sorted(custs)})
        pay_custs = sorted({p.customer_no for p in counter})
        if pay_custs:
            queries["open_bills"] = (open_bills_query(self.conn.dialect.name), {"custs": pay_custs})
        got = dict(zip(queries, select_many(self.conn, list(queries.values()))))
        for r in got.get("customers", ()):
            self.customers[r.customer_no] = _Customer(r)
        for r in got.get("known", ()):
            key = (r.bank_code, r.id_year, r.transmitted, r.stan)
            if key in idents:
                stored = json.loads(r.response_fields)
                detail = stored.pop("ER", "")
                self.known_requests[key] = (r.content_digest, _Result(r.response_code, stored, detail))
        self.known_banks = {r.bank_code for r in got.get("banks", ())}
        for rows, channel in ((got.get("rrns", ()), None), (got.get("request_rrns", ()), "C")):
            for r in rows:
                key = (r.bank_code, channel or r.channel, r.business_date, r.rrn)
                if key in rrn_keys:
                    self.used_rrns[key] = (r.id_year, r.transmitted, r.stan)
        for r in got.get("orphans", ()):
            key = (r.id_year, r.orig_transmitted, r.orig_stan)
            if key in origs:
                self.orphans.setdefault(key, []).append(r.bank_code)
        targets: list[_Payment] = []
        for r in got.get("targets", ()):
            key = (r.id_year, r.transmitted, r.stan)
            if key in rev_origs:
                p = _Payment(r.payment_id, r.bank_code, r.channel, r.customer_no, int(r.amount), r.business_date,
                             r.receipt_no)
                self.payments_by_identity.setdefault(key, []).append(p)
                targets.append(p)
        for r in got.get("debit_payments", ()):
            p = _Payment(r.payment_id, r.bank_code, r.channel, r.customer_no, int(r.amount), r.business_date,
                         r.receipt_no, r.debit_id)
            self.payments_by_debit[r.debit_id] = p
            targets.append(p)
        if "debits" in got:
            self.debits = {r.debit_id: r._asdict() for r in got["debits"]}
            for r in got["debit_bills"]:
                self.debits[r.debit_id].setdefault("bills", []).append((r.bill_id, int(r.amount)))
        prepaid = {r[0]: int(r[1] or 0) for r in got.get("prepaid", ())}
        for cust in self.customers.values():
            cust.prepaid = prepaid.get(cust.customer_no, 0)
        self.add_bills(got.get("open_bills", ()))
        # a reversal of a payment made in this batch reverses on that payment's day: its closure counts too
        batch_days = {(p.bank_code, self.calendar.business_date(p.received_at)) for p in counter} if revs else set()
        if targets:
            self.prefetch_targets(targets, st, batch_days)
        elif batch_days:
            self.prefetch_closures(batch_days, st)
        named = {b for d in self.debits.values() for b, _ in d.get("bills", ())}
        named |= {b for t in targets for b, _ in t.allocs + t.used}
        named -= set(self.bills)
        if named:  # round 3 (4 with reversals): the bills that debits and reversal targets name
            self.add_bills(self.q(bills_by_id_query(self.conn.dialect.name), ids=sorted(named)).all())

    def prefetch_closures(self, days: set[tuple], st) -> None:
        """Which of these (bank, business date) are closed, read under the banks' shared locks."""
        codes = sorted({d[0] for d in days})
        _, closed = select_many(self.conn, [(st.share_banks, {"codes": codes}), (st.closures, {"codes": codes})])
        self.closed = {key for r in closed if (key := (r.bank_code, r.business_date)) in days}

    def prefetch_targets(self, targets: list[_Payment], st, batch_days: set[tuple]) -> None:
        """What reversal targets paid, whether they were reversed already, their customers' prepaid
        histories, and whether their day (or a day of this batch's payments) is closed (read under
        the locks); their customers locked too where the CN differed (rare)."""
        ids = sorted({t.ref for t in targets})
        closures = {(t.bank_code, t.business_date) for t in targets} | batch_days
        codes = sorted({c[0] for c in closures})
        custs = sorted({t.customer_no for t in targets})
        extra = sorted(set(custs) - set(self.customers))
        queries = [(st.lock_customers, {"custs": extra}), (st.prepaid, {"custs": extra})] if extra else []
        # Reconciliation closes a day under the bank row's exclusive lock; a reversal reads the
        # closures under a shared one, so it sees a closure that commits before it (PostgreSQL;
        # SQLite has one writer at a time anyway).
        queries += [(st.target_allocations, {"ids": ids}), (st.prepaid_history, {"custs": custs}),
                    (st.target_reversals, {"ids": ids}), (st.share_banks, {"codes": codes}),
                    (st.closures, {"codes": codes})]
        got = select_many(self.conn, queries)
        if extra:
            locked, prepaid, got = got[0], got[1], got[2:]
            for r in locked:
                self.customers[r.customer_no] = _Customer(r)
            for r in prepaid:
                self.customers[r[0]].prepaid = int(r[1] or 0)
        allocs, history, reversed_, _, closed = got
        by_id = {t.ref: t for t in targets}
        for r in allocs:
            by_id[r.payment_id].allocs.append((r.bill_id, int(r.amount)))
        self.add_history(history, targets)
        for r in reversed_:
            by_id[r.payment_id].reversed = True
        self.closed = {key for r in closed if (key := (r.bank_code, r.business_date)) in closures}

    def add_history(self, rows, targets: list[_Payment]) -> None:
        """Customers' stored prepaid movements (in order), and from them what each target put into
        the balance and took from it, and which payments were reversed."""
        by_id = {t.ref: t for t in targets}
        for cust in {self.customers[t.customer_no] for t in targets if t.customer_no in self.customers}:
            cust.history = []
        for r in rows:
            cust = self.customers.get(r.customer_no)
            if cust is None or cust.history is None:
                continue
            cust.history.append((r.payment_id, int(r.amount)))
            if r.reversal_id is not None:
                self.undone.add(r.payment_id)
            target = by_id.get(r.payment_id)
            if target is not None and r.kind == "excess":
                target.excess += int(r.amount)
            elif target is not None and r.kind == "applied":
                target.used.append((r.bill_id, -int(r.amount)))

    def lock(self, custs: set[str]) -> None:
        """Read (and on PostgreSQL/Oracle lock FOR UPDATE, in key order) these customers."""
        custs = custs - set(self.customers)
        if custs:
            for r in self.q(_statements(self.conn.dialect.name).lock_customers, custs=sorted(custs)):
                self.customers[r.customer_no] = _Customer(r)

    def load_bills(self, customer_nos: set[str], bill_ids: set[str]) -> None:
        if customer_nos:
            self.add_bills(self.q(open_bills_query(self.conn.dialect.name), custs=sorted(customer_nos)).all())
        if bill_ids:
            self.add_bills(self.q(bills_by_id_query(self.conn.dialect.name), ids=sorted(bill_ids)).all())

    def add_bills(self, rows) -> None:
        for r in rows:
            if r.bill_id in self.bills:
                continue
            bill = self.bills[r.bill_id] = _Bill(r)
            cust = self.customers.get(bill.customer_no)
            if cust is not None:
                cust.bills[bill.bill_id] = bill

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def identity(p) -> tuple:
        return (p.bank_code, id_year(p.transmitted, p.received_at), p.transmitted, p.stan)

    def rrn_key(self, p) -> tuple:
        return (p.bank_code, "C", self.calendar.business_date(p.received_at), p.rrn)

    @staticmethod
    def orig_identity(r: PaymentReversal) -> tuple:
        return (id_year(r.orig_transmitted, r.received_at), r.orig_transmitted, r.orig_stan)

    def _debit_date(self, d: dict, at: datetime) -> date:
        return d["business_date"] or self.calendar.business_date(at)

    @staticmethod
    def _debit_rrn(d: dict) -> str:
        return d["rrn"] or f"D{d['debit_id']:011d}"

    def orphaned(self, bank_code: str, key: tuple) -> bool:
        return any(bank_number(b) == bank_number(bank_code) for b in self.orphans.get(key, ()))

    def remember(self, ident: tuple, posting, result: _Result) -> _Result:
        """Record the request's answer for its repeats, and its RRN for its payment unless taken."""
        self.known_requests[ident] = (posting.digest, result)
        self.new_requests.append((ident, posting, result))
        if posting.rrn and (key := self.rrn_key(posting)) not in self.used_rrns:
            owner = self.used_rrns[key] = self.rrn_owner(posting)
            self.rows["request_rrns"].append({"rrn": key[3], "business_date": key[2], "bank_code": key[0],
                                              "id_year": owner[0], "transmitted": owner[1], "stan": owner[2]})
        return result

    def rrn_owner(self, p) -> tuple:
        """The payment an RRN belongs to, as (year, field 7, field 11): a payment's own identity; a
        reversal's original, which it may carry the RRN of, when field 90 names the bank's own."""
        if isinstance(p, PaymentReversal) and bank_number(p.orig_bank_code) == bank_number(p.bank_code):
            return self.orig_identity(p)
        return self.identity(p)[1:]

    def rrn_taken(self, p) -> str:
        """§4.7: why p's RRN is not its own ('' when it is): the bank used it on the same business
        date for a request of another payment (a payment, or a reversal of it; answered or declined)."""
        key = self.rrn_key(p)
        if p.rrn and key in self.used_rrns and self.used_rrns[key] != self.rrn_owner(p):
            return f"RRN {p.rrn} was already used on {key[2].isoformat()} for another payment"
        return ""

    def entry(self, kind, ref_type, ref, business_date, actor, lines) -> None:
        self.entries.append((kind, ref_type, ref, business_date, actor, lines))

    def notice(self, cust: _Customer, kind: str, ref_prefix: str, ref, text: str) -> None:
        if cust.mobile:
            self.notices.append((cust, kind, ref_prefix, ref, text))

    def audit(self, actor, action, object_type, ref, **details) -> None:
        self.rows["audit"].append((actor, action, object_type, ref, details))

    # ---------------------------------------------------------------- decisions
    def counter_payment(self, p: CounterPayment) -> tuple[_Result, bool]:
        ident = self.identity(p)
        seen = self.known_requests.get(ident)
        if seen is not None:
            digest, result = seen
            if digest == p.digest:
                return result, True
            return _Result("94", {}, "another request with this field 32/7/11 was received before"), False
        bd = self.calendar.business_date(p.received_at)
        fields = {"business_date": bd.isoformat()}

        def decline(code: str, detail: str) -> tuple[_Result, bool]:
            return self.remember(ident, p, _Result(code, dict(fields), detail)), False

        if p.bank_code not in self.known_banks:
            return decline("58", f"bank {p.bank_code} is not registered with the ledger")
        if taken := self.rrn_taken(p):
            return decline("94", taken)
        if self.orphaned(p.bank_code, ident[1:]):
            return decline("12", "this payment was reversed before it arrived")
        if p.method not in METHODS:
            return decline("30", f"PM must be 01, 02 or 03, not {p.method!r}")
        if p.method == "03" and not p.cheque_no:
            return decline("30", "CQ (cheque number) is mandatory with PM 03")
        cust = self.customers.get(p.customer_no)
        if cust is None:
            return decline("14", "no such customer")
        if cust.status != "A":
            return decline("B2", "customer suspended" if cust.status == "S" else "customer closed")
        if p.amount <= 0:
            return decline("13", "amount must be greater than 0")
        open_bills = cust.open_bills()
        owing = sum(b.owing for b in open_bills)
        due = max(0, owing - cust.prepaid)
        if due == 0 and cust.prepay_allowed != "Y":
            return decline("B1", "nothing due and prepayment not allowed for this customer")
        if p.amount < due:
            return decline("13", f"amount {p.amount} is less than the total due {due}")
        if not fits(cust.prepaid + p.amount - owing):   # funds cover owing here: the rest is prepaid
            return decline("13", f"amount {p.amount} would take the prepaid balance past {AMOUNT_LIMIT - 1} fen")
        pay = _Payment(New(), p.bank_code, "C", cust.customer_no, p.amount, bd, None)
        self.rows["payments"].append({
            "payment_id": pay.ref, "channel": "C", "bank_code": p.bank_code, "customer_no": cust.customer_no,
            "id_year": ident[1], "transmitted": p.transmitted, "stan": p.stan, "rrn": p.rrn, "business_date": bd,
            "amount": p.amount, "method": p.method, "cheque_no": p.cheque_no if p.method == "03" else None,
            "receipt_no": pay, "terminal_id": p.terminal_id or None, "branch_id": p.branch_id or None,
            "debit_id": None, "source": "B", "created_at": self.now})
        actor = bank_actor(p.bank_code)
        periods = self.pay_bills(pay, cust, open_bills, bd, actor, use_prepaid=True)
        self.payments_by_identity.setdefault(ident[1:], []).append(pay)
        paid_on_bills = pay.amount - pay.excess
        text = (notices.payment_received(cust.customer_no, periods, paid_on_bills) if periods
                else notices.payment_received(cust.customer_no, [], pay.amount, cust.prepaid))
        self.notice(cust, "payment", "payment", pay.ref, text)
        self.audit(actor, "payment.post", "payment", pay.ref, amount=p.amount, customer_no=cust.customer_no,
                   rrn=p.rrn, stan=p.stan, transmitted=p.transmitted, method=p.method, excess=pay.excess)
        fields["prepaid_balance"] = cust.prepaid
        return self.remember(ident, p, _Result("00", fields, "", pay)), False

    def pay_bills(self, pay: _Payment, cust: _Customer, open_bills: list[_Bill], bd: date, actor: str,
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

    def payment_reversal(self, r: PaymentReversal) -> tuple[_Result, bool]:
        ident = self.identity(r)
        seen = self.known_requests.get(ident)
        if seen is not None:
            digest, result = seen
            if digest == r.digest:
                return result, True
            return _Result("94", {}, "another request with this field 32/7/11 was received before"), False
        bd = self.calendar.business_date(r.received_at)
        fields = {"business_date": bd.isoformat()}

        def decline(code: str, detail: str) -> tuple[_Result, bool]:
            return self.remember(ident, r, _Result(code, dict(fields), detail)), False

        if taken := self.rrn_taken(r):
            return decline("94", taken)
        okey = self.orig_identity(r)
        found = [p for p in self.payments_by_identity.get(okey, ()) if bank_number(p.bank_code) == bank_number(r.orig_bank_code)]
        if not found:
            self.remember_orphan(r, okey)
            return decline("25", "original payment not found; it will be declined if it arrives")
        pay = found[0]
        # §4.5 names every 12 a reversal of a payment found can get: field 32 or CN not the
        # original's, the day reconciled, or the payment no longer exactly undoable (in reverse)
        if bank_number(r.bank_code) != bank_number(pay.bank_code):
            return decline("12", "a bank can only reverse its own payments (field 90 names another bank)")
        if r.amount != pay.amount:
            return decline("13", f"amount {r.amount} differs from the original's {pay.amount}")
        if r.customer_no and r.customer_no != pay.customer_no:
            return decline("12", "CN differs from the original payment's customer")
        if pay.reversed:
            return self.remember(ident, r, _Result("00", fields, "", pay)), False
        if (pay.bank_code, pay.business_date) in self.closed:
            return decline("12", f"business date {pay.business_date.isoformat()} already reconciled; reversal not allowed")
        cust = self.customers[pay.customer_no]
        problem = self.reverse(pay, cust, bd, bank_actor(r.bank_code), "B", (ident[1], r.transmitted, r.stan), "")
        if problem:
            return decline("12", problem)
        fields["prepaid_balance"] = cust.prepaid
        return self.remember(ident, r, _Result("00", fields, "", pay)), False

    def remember_orphan(self, r: PaymentReversal, okey: tuple) -> None:
        """A bank's reversal of its own payment that has not arrived: the payment is declined if it
        comes. One naming another bank's payment is not kept: it could not have reversed it."""
        if bank_number(r.orig_bank_code) != bank_number(r.bank_code) or self.orphaned(r.orig_bank_code, okey):
            return
        self.orphans.setdefault(okey, []).append(r.bank_code)
        self.rows["orphans"].append({"bank_code": r.bank_code, "id_year": okey[0],
                                     "orig_transmitted": r.orig_transmitted, "orig_stan": r.orig_stan,
                                     "amount": r.amount, "created_at": self.now})
        self.audit(bank_actor(r.bank_code), "reversal.orphan", "request",
                   f"{r.bank_code}:{okey[0]}:{r.orig_transmitted}:{r.orig_stan}", amount=r.amount,
                   transmitted=r.transmitted, stan=r.stan)

    def reverse(self, pay: _Payment, cust: _Customer, bd: date, actor: str, source: str,
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

    def not_undoable(self, pay: _Payment, cust: _Customer) -> str:
        """Why reversing pay would not restore what it changed ('' when it would)."""
        if any(b in self.bills and self.bills[b].cancelled for b, _ in pay.allocs + pay.used):
            return "a bill this payment paid has been corrected since; an operator must reverse it"
        if self.created_prepaid_used(pay, cust):
            return ("the prepaid balance this payment created has since paid other bills; "
                    "reverse through reconciliation")
        return ""

    def created_prepaid_used(self, pay: _Payment, cust: _Customer) -> bool:
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

    def load_history(self, pay: _Payment, cust: _Customer) -> None:
        """For a payment to reverse that no prefetch read (reconciliation's red reversal)."""
        pay.used, pay.excess = [], 0
        rows = self.q(_statements(self.conn.dialect.name).prepaid_history, custs=[cust.customer_no]).all()
        self.add_history(rows, [pay])
        self.load_bills(set(), {b for b, _ in pay.allocs + pay.used} - set(self.bills))

    # ---------------------------------------------------------------- direct debits
    ALLOWED = {"approved": ("pending", "sent", "unknown"), "declined": ("pending", "sent", "unknown"),
               "unknown": ("pending", "sent"), "reversed": ("approved", "sent", "unknown")}

    def debit_result(self, d: DebitResult) -> tuple[_Result, bool]:
        debit = self.debits.get(d.debit_id)
        if debit is None:
            return _Result("25", {}, f"no debit {d.debit_id}"), False
        if d.result not in self.ALLOWED:
            raise ValueError(f"unknown debit result {d.result!r}")
        state = debit["state"]
        bd = self._debit_date(debit, d.at)
        fields = {"business_date": bd.isoformat(), "state": state}
        if state == d.result:
            return _Result("00", fields, "already recorded"), True
        if state not in self.ALLOWED[d.result]:
            return _Result("12", fields, f"debit is {state}; cannot become {d.result}"), False
        cust = self.customers[debit["customer_no"]]
        periods = sorted({self.bills[b].period for b, _ in debit.get("bills", ()) if b in self.bills})
        result = _Result("00", fields)
        if d.result == "approved":
            rrn_key = (debit["bank_code"], "D", bd, self._debit_rrn(debit))
            if rrn_key in self.used_rrns:
                return _Result("94", fields, f"RRN {rrn_key[3]} already used by another payment"), False
            pay = _Payment(New(), debit["bank_code"], "D", cust.customer_no, int(debit["amount"]), bd, None,
                           d.debit_id)
            transmitted = debit["transmitted"] or f"F{d.debit_id:09d}"[-10:]
            self.rows["payments"].append({
                "payment_id": pay.ref, "channel": "D", "bank_code": debit["bank_code"],
                "customer_no": cust.customer_no, "id_year": id_year(transmitted, d.at) if debit["transmitted"]
                else bd.year, "transmitted": transmitted, "stan": debit["stan"] or "000000",
                "rrn": rrn_key[3], "business_date": bd, "amount": pay.amount, "method": DEBIT_METHOD,
                "cheque_no": None, "receipt_no": pay, "terminal_id": None, "branch_id": None,
                "debit_id": d.debit_id, "source": "B", "created_at": self.now})
            self.used_rrns[rrn_key] = None
            amounts = dict(debit.get("bills", ()))
            targets = sorted((self.bills[b] for b in amounts if b in self.bills), key=_Bill.sort_key)
            self.pay_bills(pay, cust, targets, bd, d.actor, use_prepaid=False, amounts=amounts)
            self.payments_by_debit[d.debit_id] = pay
            self.notice(cust, "debit_ok", "debit", d.debit_id,
                        notices.debit_succeeded(cust.customer_no, periods, pay.amount))
            self.audit(d.actor, "debit.approved", "debit", d.debit_id, payment=pay.ref, amount=pay.amount,
                       excess=pay.excess, approval_code=d.approval_code)
            result = _Result("00", fields, "", pay)
        elif d.result == "declined":
            self.notice(cust, "debit_failed", "debit", d.debit_id,
                        notices.debit_failed(cust.customer_no, periods, int(debit["amount"]), d.response_code or ""))
            self.audit(d.actor, "debit.declined", "debit", d.debit_id, response_code=d.response_code, reason=d.detail)
        elif d.result == "unknown":
            self.audit(d.actor, "debit.unknown", "debit", d.debit_id, reason=d.detail)
        else:  # reversed
            pay = self.payments_by_debit.get(d.debit_id)
            if pay is not None and not pay.reversed:
                problem = self.reverse(pay, cust, self.calendar.business_date(d.at), d.actor, "D", None,
                                       d.detail or "debit reversed by the bank")
                if problem:
                    return _Result("12", fields, problem), False
            self.audit(d.actor, "debit.reversed", "debit", d.debit_id, posted=pay is not None, reason=d.detail)
        self.rows["debit_updates"].append({
            "debit_id": d.debit_id, "state": d.result,
            "response_code": d.response_code if d.response_code is not None else debit["response_code"],
            "approval_code": d.approval_code if d.approval_code is not None else debit["approval_code"],
            "updated_at": self.now})
        self.rows["debit_attempts"].append({
            "debit_id": d.debit_id, "event": d.result, "mti": None, "response_code": d.response_code,
            "detail": d.detail[:200], "actor": d.actor, "at": d.at})
        debit["state"] = d.result
        fields["state"] = d.result
        return result, False

    # ---------------------------------------------------------------- rows
    def _alloc(self, bill_id, amount, payment, reversal, move) -> dict:
        return {"bill_id": bill_id, "amount": amount, "payment_id": payment, "reversal_id": reversal,
                "prepaid_movement_id": move, "correction_bill_id": None, "created_at": self.now}

    def _move(self, ref, customer_no, amount, kind, payment, reversal, bill_id) -> dict:
        return {"id": ref, "customer_no": customer_no, "amount": amount, "kind": kind, "payment_id": payment,
                "reversal_id": reversal, "bill_id": bill_id, "refund_id": None, "created_at": self.now}

    def flush(self) -> None:
        """Reserve ids, then one multi-row insert per table (foreign keys' order), all sent together."""
        now, rows = self.now, self.rows
        owners = ((payments, "payment_id", "payments"), (reversals, "reversal_id", "reversals"),
                  (prepaid_movements, "id", "prepaid_movements"))
        *row_ids, entry_ids = reserve_ids_many(self.conn, [(table, len(rows[name])) for table, _, name in owners]
                                               + [(journal_entries, len(self.entries))])
        for (_, key, name), ids in zip(owners, row_ids):
            for row, new_id in zip(rows[name], ids):
                row[key].id = new_id
        for row in rows["payments"]:
            row["receipt_no"] = row["receipt_no"].receipt_no()
        writes = Writes(self.conn)
        for name, table in (("payments", payments), ("reversals", reversals), ("prepaid_movements", prepaid_movements),
                            ("allocations", allocations)):
            writes.insert(table, [{k: _v(v) for k, v in row.items()} for row in rows[name]])
        entry_rows, line_rows = [], []
        for entry_id, (kind, ref_type, ref, bd, actor, lines) in zip(entry_ids, self.entries):
            e = Entry(kind, ref_type, str(_v(ref)), bd, actor)
            for account, amount, cust in lines:
                e.debit(account, amount, cust)
            entry_rows.append({"entry_id": entry_id, **e.entry_row(now)})   # entry_row checks the balance
            line_rows.extend(e.line_rows(entry_id))
        writes.insert(journal_entries, entry_rows)
        writes.insert(journal_lines, line_rows)
        out = []
        for cust, kind, prefix, ref, text in self.notices:
            row = notices.outbox_row(cust.customer_no, cust.mobile, kind, f"{prefix}:{_v(ref)}", text, now)
            if row is not None:
                out.append(row)
        writes.insert(outbox, out)
        writes.insert(audit_log, [audit_row(now, actor, action, otype, _v(ref), reason=details.pop("reason", "") or "",
                                            **{k: _v(v) for k, v in details.items()})
                                  for actor, action, otype, ref, details in rows["audit"]])
        writes.insert(bank_requests, [{
            "bank_code": ident[0], "id_year": ident[1], "transmitted": ident[2], "stan": ident[3],
            "mti": p.mti, "processing_code": PAYMENT_CODE, "content_digest": p.digest,
            "response_code": res.code, "response_fields": _stored(res), "received_at": p.received_at}
            for ident, p, res in self.new_requests])
        writes.insert(request_rrns, rows["request_rrns"])
        writes.insert(orphan_reversals, rows["orphans"])
        # the history before the state: its foreign-key check finds the debit row under this
        # transaction's FOR UPDATE lock; after the update it would lock the new row version again
        writes.insert(debit_attempts, rows["debit_attempts"])
        writes.update(debits, "debit_id", rows["debit_updates"])
        writes.flush()


def _stored(res: _Result) -> str:
    fields = dict(res.final_fields())
    if res.detail:
        fields["ER"] = res.detail
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str)


_reversing = aliased(bills)


@functools.cache
def _statements(dialect_name: str) -> SimpleNamespace:
    """The batch's queries, built once per dialect (``select_many`` compiles each once)."""
    def IN(col, name):
        return in_list(dialect_name, col, name)

    br, pay, orph, pm, al = bank_requests.c, payments.c, orphan_reversals.c, prepaid_movements.c, allocations.c
    rr = request_rrns.c
    bdc = business_day_closures.c
    return SimpleNamespace(
        debits=select(debits).where(IN(debits.c.debit_id, "ids")),
        lock_customers=(select(customers.c.customer_no, customers.c.customer_name, customers.c.status,
                               customers.c.prepay_allowed, customers.c.mobile)
                        .where(IN(customers.c.customer_no, "custs")).order_by(customers.c.customer_no)
                        .with_for_update()),
        known_requests=(select(br.bank_code, br.id_year, br.transmitted, br.stan, br.content_digest,
                               br.response_code, br.response_fields)
                        .where(IN(br.stan, "stans"), IN(br.transmitted, "ts"))),  # the identity index's lead
        banks=select(banks.c.bank_code).where(IN(banks.c.bank_code, "codes")),
        # by rrn alone, uq_payments_rrn's leading column, matched to the whole key in Python: with a
        # condition on the bank and date too, a planner without statistics took the (date, bank)
        # index for selective and filtered the whole day's payments
        used_rrns=(select(pay.bank_code, pay.channel, pay.business_date, pay.rrn, pay.id_year, pay.transmitted,
                          pay.stan).where(IN(pay.rrn, "rrns"))),
        # likewise by rrn alone, the primary key's leading column
        request_rrns=(select(rr.bank_code, rr.business_date, rr.rrn, rr.id_year, rr.transmitted, rr.stan)
                      .where(IN(rr.rrn, "rrns"))),
        orphans=(select(orph.bank_code, orph.id_year, orph.orig_transmitted, orph.orig_stan)
                 .where(IN(orph.orig_stan, "stans"))),
        reversal_targets=select(payments).where(pay.channel == "C", IN(pay.stan, "stans"), IN(pay.transmitted, "ts")),
        debit_payments=select(payments).where(IN(pay.debit_id, "ids")),
        lock_debits=(select(debits).where(IN(debits.c.debit_id, "ids")).order_by(debits.c.debit_id)
                     .with_for_update()),
        debit_bills=select(debit_bills).where(IN(debit_bills.c.debit_id, "ids")),
        prepaid=(select(pm.customer_no, func.sum(pm.amount)).where(IN(pm.customer_no, "custs"))
                 .group_by(pm.customer_no)),
        target_allocations=(select(al.payment_id, al.bill_id, al.amount)
                            .where(IN(al.payment_id, "ids"), al.reversal_id.is_(None), al.correction_bill_id.is_(None))
                            .order_by(al.id)),
        prepaid_history=(select(pm.customer_no, pm.payment_id, pm.reversal_id, pm.kind, pm.bill_id, pm.amount)
                         .where(IN(pm.customer_no, "custs")).order_by(pm.id)),
        target_reversals=select(reversals.c.payment_id).where(IN(reversals.c.payment_id, "ids")),
        share_banks=select(banks.c.bank_code).where(IN(banks.c.bank_code, "codes")).with_for_update(read=True),
        closures=select(bdc.bank_code, bdc.business_date).where(IN(bdc.bank_code, "codes")),
    )


def _bill_columns():
    allocated = (select(func.coalesce(func.sum(allocations.c.amount), 0)).where(allocations.c.bill_id == bills.c.bill_id)
                 .scalar_subquery())
    cancelled = exists().where(_reversing.c.reverses_bill_id == bills.c.bill_id)
    return allocated, cancelled


@functools.cache
def open_bills_query(dialect_name: str):
    """Bills of the customers (bind list ``custs``) still owing something, with what has been paid."""
    allocated, cancelled = _bill_columns()
    return (select(bills.c.bill_id, bills.c.customer_no, bills.c.period, bills.c.principal, bills.c.penalty,
                   bills.c.due_date, allocated.label("allocated"), literal_column("0").label("cancelled"))
            .where(in_list(dialect_name, bills.c.customer_no, "custs"), bills.c.kind != "R", ~cancelled,
                   bills.c.principal + bills.c.penalty > allocated))


@functools.cache
def bills_by_id_query(dialect_name: str):
    allocated, cancelled = _bill_columns()
    return (select(bills.c.bill_id, bills.c.customer_no, bills.c.period, bills.c.principal, bills.c.penalty,
                   bills.c.due_date, allocated.label("allocated"), cancelled.label("cancelled"))
            .where(in_list(dialect_name, bills.c.bill_id, "ids")))


def apply_batch(conn, postings: Sequence[Posting], calendar: BusinessCalendar, now: datetime) -> list[Outcome]:
    """Decide and write postings in conn's transaction (the caller commits). Outcomes in order."""
    batch = _Batch(conn, calendar, now)
    batch.prefetch(postings)
    decided: list[tuple[_Result, bool]] = []
    for p in postings:
        if isinstance(p, CounterPayment):
            decided.append(batch.counter_payment(p))
        elif isinstance(p, PaymentReversal):
            decided.append(batch.payment_reversal(p))
        elif isinstance(p, DebitResult):
            decided.append(batch.debit_result(p))
        else:
            raise TypeError(f"not a posting: {p!r}")
    batch.flush()
    return [Outcome(res.code, dict(res.final_fields()), res.detail, replayed) for res, replayed in decided]


def post(engine, postings: Iterable[Posting], calendar: BusinessCalendar | None = None,
         clock: Callable[[], datetime] | None = None) -> list[Outcome]:
    """Post synchronously in one transaction, with the group committer's retry rules."""
    from ledger.group_commit import Poster

    return Poster(engine, calendar or BusinessCalendar(), clock or utcnow).process(list(postings))


def __getattr__(name):  # GroupCommitter and inquire live in their own modules; importable from here too
    if name == "GroupCommitter":
        from ledger.group_commit import GroupCommitter
        return GroupCommitter
    if name in ("inquire", "InquiryResult"):
        from ledger import inquiry
        return getattr(inquiry, name)
    raise AttributeError(name)
