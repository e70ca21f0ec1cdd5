"""A posting batch's state, and reading it: everything the batch's decisions need, fetched up front.

``BatchState.prefetch`` reads for the gateway's and the debit engine's kinds in a few rounds of
set queries (one round trip each on PostgreSQL); the back office's kinds read what they need as
they are decided (``lock``, ``load_bills``). The helpers at the end queue what is to be written.
"""
from __future__ import annotations

import json
from datetime import date, datetime
from typing import Sequence

from config import notices
from config.clock import Clock
from ledger.ids import bank_number, id_year
from ledger.posting.kinds import CounterPayment, DebitResult, PaymentReversal, Posting
from ledger.posting.model import Bill, Customer, Payment, Result
from ledger.posting.queries import bills_by_id_query, closed_days, closed_days_queries, open_bills_query, statements
from runtime.bulk_sql import select_many


class BatchState:
    """A batch's prefetched state and what it is to write; the rules (``rules``, ``bank_kinds``,
    ``office_kinds``) decide against it and ``writes.flush`` writes it."""
    def __init__(self, conn, clock: Clock, now: datetime):
        self.conn, self.clock, self.now = conn, clock, now
        # prefetched
        self.known_requests: dict[tuple, tuple[str, Result]] = {}
        self.known_banks: set[str] = set()
        self.used_rrns: dict[tuple, tuple | None] = {}   # (bank, channel, date, rrn) -> whose (rrn_owner)
        self.orphans: dict[tuple, list[str]] = {}      # (year, transmitted, stan) -> bank codes
        self.payments_by_identity: dict[tuple, list[Payment]] = {}  # channel C, (year, t, s)
        self.payments_by_debit: dict[int, Payment] = {}
        self.customers: dict[str, Customer] = {}
        self.bills: dict[str, Bill] = {}
        self.closed: set[tuple] = set()
        self.debits: dict[int, dict] = {}
        self.undone: set = set()   # refs of payments reversed: left out of prepaid histories
        self.all_bills_read: set[str] = set()   # customers whose open bills have all been read (the feed's owing)
        # to write
        self.new_requests: list[tuple[tuple, object, Result]] = []
        self.rows: dict[str, list[dict]] = {t: [] for t in (
            "payments", "reversals", "prepaid_movements", "allocations", "outbox", "audit", "orphans",
            "debit_updates", "debit_attempts", "request_rrns", "billing_feed")}
        self.entries: list[tuple] = []   # (kind, ref_type, ref, business_date, actor, lines)
        self.notices: list[tuple] = []   # (customer, kind, ref prefix, ref, text)

    # ---------------------------------------------------------------- prefetch
    def q(self, stmt, **params):
        return self.conn.execute(stmt, params)

    def prefetch(self, postings: Sequence[Posting]) -> None:
        """Everything the batch's decisions need, in a few rounds of set queries (``select_many``:
        one round trip each on PostgreSQL). Keys of several columns are fetched by a superset (IN
        per column) and matched exactly here.

        Customers whose money this batch may move are locked (FOR NO KEY UPDATE on PostgreSQL, FOR
        UPDATE on Oracle; ``queries.lock_customers`` says why not FOR UPDATE) in key order (PostgreSQL,
        Oracle; SQLite's BEGIN IMMEDIATE already made this transaction the only writer), BEFORE
        anything that decides is read: the statements of a round run in order, the lock first. A
        reversal locks its CN, so a payment and its reversal arriving at once through two processes
        are serialized (no orphan slipping past its original)."""
        counter = [p for p in postings if isinstance(p, CounterPayment)]
        revs = [p for p in postings if isinstance(p, PaymentReversal)]
        dres = [p for p in postings if isinstance(p, DebitResult)]
        st = statements(self.conn.dialect.name)
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
        # all open bills of whose money may move: the payments' rules need them, the billing feed
        # says what each customer owes after (a debit's or a reversal's customer's other bills too)
        pay_custs = sorted({p.customer_no for p in counter} | {
            d["customer_no"] for r in dres if r.result in ("approved", "reversed") and (d := self.debits.get(r.debit_id))})
        if pay_custs:
            queries["open_bills"] = (open_bills_query(self.conn.dialect.name), {"custs": pay_custs})
        got = dict(zip(queries, select_many(self.conn, list(queries.values()))))
        for r in got.get("customers", ()):
            self.customers[r.customer_no] = Customer(r)
        for r in got.get("known", ()):
            key = (r.bank_code, r.id_year, r.transmitted, r.stan)
            if key in idents:
                stored = json.loads(r.response_fields)
                detail = stored.pop("ER", "")
                self.known_requests[key] = (r.content_digest, Result(r.response_code, stored, detail))
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
        targets: list[Payment] = []
        for r in got.get("targets", ()):
            key = (r.id_year, r.transmitted, r.stan)
            if key in rev_origs:
                p = Payment(r.payment_id, r.bank_code, r.channel, r.customer_no, int(r.amount), r.business_date,
                             r.receipt_no)
                self.payments_by_identity.setdefault(key, []).append(p)
                targets.append(p)
        for r in got.get("debit_payments", ()):
            p = Payment(r.payment_id, r.bank_code, r.channel, r.customer_no, int(r.amount), r.business_date,
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
        self.all_bills_read.update(pay_custs)
        # a reversal of a payment made in this batch reverses on that payment's day: its closure counts too
        batch_days = {(p.bank_code, self.clock.business_date(p.received_at)) for p in counter} if revs else set()
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
        _, closed = select_many(self.conn, closed_days_queries(st, sorted({d[0] for d in days})))
        self.closed = closed_days(closed, days)

    def prefetch_targets(self, targets: list[Payment], st, batch_days: set[tuple]) -> None:
        """What reversal targets paid, whether they were reversed already, their customers' prepaid
        histories, and whether their day (or a day of this batch's payments) is closed (read under
        the locks); their customers locked too where the CN differed (rare)."""
        ids = sorted({t.ref for t in targets})
        closures = {(t.bank_code, t.business_date) for t in targets} | batch_days
        codes = sorted({c[0] for c in closures})
        custs = sorted({t.customer_no for t in targets})
        extra = sorted(set(custs) - set(self.customers))
        queries = [(st.lock_customers, {"custs": extra}), (st.prepaid, {"custs": extra})] if extra else []
        queries += [(open_bills_query(self.conn.dialect.name), {"custs": custs}),   # for the billing feed
                    (st.target_allocations, {"ids": ids}), (st.prepaid_history, {"custs": custs}),
                    (st.target_reversals, {"ids": ids}), *closed_days_queries(st, codes)]
        got = select_many(self.conn, queries)
        if extra:
            locked, prepaid, got = got[0], got[1], got[2:]
            for r in locked:
                self.customers[r.customer_no] = Customer(r)
            for r in prepaid:
                self.customers[r[0]].prepaid = int(r[1] or 0)
        open_bills, allocs, history, reversed_, _, closed = got
        self.add_bills(open_bills)
        self.all_bills_read.update(custs)
        by_id = {t.ref: t for t in targets}
        for r in allocs:
            by_id[r.payment_id].allocs.append((r.bill_id, int(r.amount)))
        self.add_history(history, targets)
        for r in reversed_:
            by_id[r.payment_id].reversed = True
        self.closed = closed_days(closed, closures)

    def add_history(self, rows, targets: list[Payment]) -> None:
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
        """Read (and on PostgreSQL/Oracle lock, in key order) these customers."""
        custs = custs - set(self.customers)
        if custs:
            for r in self.q(statements(self.conn.dialect.name).lock_customers, custs=sorted(custs)):
                self.customers[r.customer_no] = Customer(r)

    def load_bills(self, customer_nos: set[str], bill_ids: set[str]) -> None:
        if customer_nos:
            self.add_bills(self.q(open_bills_query(self.conn.dialect.name), custs=sorted(customer_nos)).all())
            self.all_bills_read.update(customer_nos)
        if bill_ids:
            self.add_bills(self.q(bills_by_id_query(self.conn.dialect.name), ids=sorted(bill_ids)).all())

    def add_bills(self, rows) -> None:
        for r in rows:
            if r.bill_id in self.bills:
                continue
            bill = self.bills[r.bill_id] = Bill(r)
            cust = self.customers.get(bill.customer_no)
            if cust is not None:
                cust.bills[bill.bill_id] = bill

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def identity(p) -> tuple:
        return (p.bank_code, id_year(p.transmitted, p.received_at), p.transmitted, p.stan)

    def rrn_key(self, p) -> tuple:
        return (p.bank_code, "C", self.clock.business_date(p.received_at), p.rrn)

    @staticmethod
    def orig_identity(r: PaymentReversal) -> tuple:
        return (id_year(r.orig_transmitted, r.received_at), r.orig_transmitted, r.orig_stan)

    def _debit_date(self, d: dict, at: datetime) -> date:
        return d["business_date"] or self.clock.business_date(at)

    @staticmethod
    def _debit_rrn(d: dict) -> str:
        return d["rrn"] or f"D{d['debit_id']:011d}"

    def orphaned(self, bank_code: str, key: tuple) -> bool:
        return any(bank_number(b) == bank_number(bank_code) for b in self.orphans.get(key, ()))

    def answered_before(self, ident: tuple, digest: str) -> tuple[Result, bool] | None:
        """A request identity seen before: its stored answer replayed (same content), or 94 (other
        content); None for a new identity."""
        seen = self.known_requests.get(ident)
        if seen is None:
            return None
        stored_digest, result = seen
        if stored_digest == digest:
            return result, True
        return Result("94", {}, "another request with this field 32/7/11 was received before"), False

    def remember(self, ident: tuple, posting, result: Result) -> Result:
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
        """docs/spec/INTERFACE.md §4.7: why p's RRN is not its own ('' when it is): the bank used it on
        the same business date for a request of another payment (a payment, or a reversal of it;
        answered or declined)."""
        key = self.rrn_key(p)
        if p.rrn and key in self.used_rrns and self.used_rrns[key] != self.rrn_owner(p):
            return f"RRN {p.rrn} was already used on {key[2].isoformat()} for another payment"
        return ""

    def entry(self, kind, ref_type, ref, business_date, actor, lines) -> None:
        self.entries.append((kind, ref_type, ref, business_date, actor, lines))

    def notice(self, cust: Customer, kind: str, ref_prefix: str, ref, sms: notices.Sms) -> None:
        if cust.mobile:
            self.notices.append((cust, kind, ref_prefix, ref, sms))

    def audit(self, actor, action, object_type, ref, **details) -> None:
        self.rows["audit"].append((actor, action, object_type, ref, details))

