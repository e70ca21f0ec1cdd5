"""verify() finds each kind of broken invariant; and a stateful property test that random
mixes of payments, reversals, repeats and conflicts always leave a ledger that verifies."""
from __future__ import annotations

import itertools
import tempfile
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import insert, select, update

from config.clock import Clock
from ledger.inquiry import inquire
from ledger.schema import allocations, journal_entries, journal_lines, payments, prepaid_movements, reversals
from ledger.synchronous_posting import post
from ledger.verify import verify
from ledger_helpers import T0, add_banks, add_bill, add_customer, new_engine, payment, reversal

CAL = Clock()


@pytest.fixture
def ledger(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, "0102")
        add_customer(conn, "3001")
        add_bill(conn, "3001", "202610", 10_000, 100)
        add_customer(conn, "3002")
    p = payment("0102", "3001", 12_000)
    assert post(engine, [p], CAL)[0].response_code == "00"
    q = payment("0102", "3002", 500)
    post(engine, [q, reversal(q)], CAL)
    assert verify(engine) == []
    yield engine
    engine.dispose()


def failures_after(engine, *statements) -> str:
    with engine.begin() as conn:
        for s in statements:
            conn.execute(s)
    return "\n".join(verify(engine))


def _date_of_entry(entry_id: int):
    return select(journal_entries.c.business_date).where(journal_entries.c.entry_id == entry_id).scalar_subquery()


def test_unbalanced_entry(ledger):
    out = failures_after(ledger, insert(journal_lines).values(entry_id=1, business_date=_date_of_entry(1),
                                                              account="revenue", amount=-1))
    assert "journal entry 1 does not balance" in out and "journal as a whole" in out
    assert "dated" not in out


def test_a_line_dated_unlike_its_entry(ledger):
    """Invariant 10: a line's business date is its entry's (its month's partition on PostgreSQL)."""
    with ledger.connect() as conn:
        line = conn.execute(select(journal_lines).order_by(journal_lines.c.id)).mappings().first()
    moved = line["business_date"] + timedelta(days=40)
    out = failures_after(ledger, update(journal_lines).where(journal_lines.c.id == line["id"])
                         .values(business_date=moved))
    assert out == f"journal line {line['id']} is dated {moved}, its entry {line['entry_id']} {line['business_date']}"


def test_over_allocated_bill(ledger):
    out = failures_after(ledger, insert(allocations).values(bill_id="B3001202610", amount=1, created_at=T0))
    assert "bill B3001202610: allocated 10101 outside 0..10100" in out
    assert "receivable account" in out


def test_negative_prepaid(ledger):
    out = failures_after(ledger, insert(prepaid_movements).values(customer_no="3001", amount=-5_000, kind="refund",
                                                                  created_at=T0))
    assert "customer 3001 has a negative prepaid balance -3100" in out and "prepaid account" in out


def test_reversal_amount_and_clearing(ledger):
    out = failures_after(ledger, update(reversals).values(amount=400))
    assert "differs from its payment" in out and "takes back" in out and "bank_clearing:0102" in out


def test_payment_split_and_missing_entry(ledger):
    with ledger.connect() as conn:
        pid = conn.execute(select(payments.c.payment_id).where(payments.c.customer_no == "3001")).scalar_one()
    out = failures_after(ledger, update(prepaid_movements).where(prepaid_movements.c.payment_id == pid)
                         .values(amount=1_000),
                         update(journal_entries).where(journal_entries.c.ref_type == "payment",
                                                       journal_entries.c.ref_id == str(pid)).values(ref_id="999"))
    assert f"payment {pid} of 12000" in out and f"payment {pid} has 0 journal entries" in out
    assert "refer to no payment" in out


def test_references_a_posting_creates_are_checked(ledger):
    """Invariant 10: the references the ledger keeps without a foreign key (a posting inserts
    them with the rows they point at) are checked by verify."""
    out = failures_after(
        ledger,
        insert(journal_lines).values(entry_id=424242, business_date=T0.date(), account="revenue", amount=0),
        insert(allocations).values(bill_id="B3001202610", amount=0, payment_id=515151, created_at=T0),
        insert(allocations).values(bill_id="B3001202610", amount=0, reversal_id=616161, prepaid_movement_id=717171,
                                   created_at=T0),
        insert(prepaid_movements).values(customer_no="3001", amount=0, kind="excess", payment_id=818181,
                                         reversal_id=919191, created_at=T0))
    for expected in ("journal_lines.entry_id 424242 refers to no journal_entries row",
                     "allocations.payment_id 515151 refers to no payments row",
                     "allocations.reversal_id 616161 refers to no reversals row",
                     "allocations.prepaid_movement_id 717171 refers to no prepaid_movements row",
                     "prepaid_movements.payment_id 818181 refers to no payments row",
                     "prepaid_movements.reversal_id 919191 refers to no reversals row"):
        assert expected in out, out


# ------------------------------------------------------------------------------------- property test

_db: dict = {}


def _engine():
    if "engine" not in _db:
        _db["dir"] = tempfile.TemporaryDirectory()
        engine = new_engine(f"sqlite:///{_db['dir'].name}/prop.db")
        with engine.begin() as conn:
            add_banks(conn, "0102", "0103")
        _db["engine"] = engine
    return _db["engine"]


_run = itertools.count()


class LedgerMachine(RuleBasedStateMachine):
    """Random payments (exact, with excess, short), reversals (right and wrong amounts, orphans),
    repeats and identity/RRN conflicts, new bills; in batches of one or several postings."""

    @initialize()
    def setup(self):
        self.engine = _engine()
        self.run = next(_run)
        self.customers = [f"P{self.run:04d}{i}" for i in range(3)]
        self.stan = itertools.count(1)
        self.at = T0
        self.sent: list = []         # (posting, outcome) answered so far
        self.pending: list = []
        self.period = itertools.count(1)
        with self.engine.begin() as conn:
            for i, c in enumerate(self.customers):
                add_customer(conn, c, prepay="Y" if i != 2 else "N")
                add_bill(conn, c, "202601", 1_000 * (i + 1), 10 * i)

    def _tick(self):
        self.at += timedelta(seconds=1)
        return f"{self.run % 100:02d}{next(self.stan):04d}"

    def _flush(self):
        outs = post(self.engine, self.pending, CAL)
        for p, o in zip(self.pending, outs):
            assert o.response_code in {"00", "12", "13", "14", "25", "94", "B1", "B2"}, o
            self.sent.append((p, o))
        self.pending = []

    @rule(c=st.integers(0, 2), extra=st.sampled_from([0, 0, 1, 250, -1]), now=st.booleans())
    def pay(self, c, extra, now):
        cust = self.customers[c]
        due = inquire(self.engine, cust, self.at).total_due
        self.pending.append(payment(st_bank(c), cust, max(1, due + extra), stan=self._tick(), at=self.at))
        if now:
            self._flush()

    @rule(i=st.integers(0, 50), wrong=st.booleans(), now=st.booleans())
    def reverse(self, i, wrong, now):
        payments_sent = [p for p, _ in self.sent if hasattr(p, "method")]
        if not payments_sent:
            return
        p = payments_sent[i % len(payments_sent)]
        self.pending.append(reversal(p, amount=p.amount + (1 if wrong else 0), stan=self._tick(), at=self.at))
        if now:
            self._flush()

    @rule(c=st.integers(0, 2))
    def orphan_then_original(self, c):
        cust = self.customers[c]
        p = payment(st_bank(c), cust, 5_000, stan=self._tick(), at=self.at)
        self.pending.append(reversal(p, stan=self._tick(), at=self.at))
        self._flush()
        self.pending.append(p)
        self._flush()
        assert self.sent[-1][1].response_code == "12"

    @rule(i=st.integers(0, 50))
    def repeat(self, i):
        if not self.sent:
            return
        p, o = self.sent[i % len(self.sent)]
        if o.response_code == "94":
            return
        again = post(self.engine, [p], CAL)[0]
        assert again.replayed and (again.response_code, again.fields, again.detail) == (o.response_code, o.fields, o.detail)

    @rule(i=st.integers(0, 50))
    def conflicting_identity(self, i):
        payments_sent = [p for p, o in self.sent if hasattr(p, "method") and o.response_code != "94"]
        if not payments_sent:
            return
        p = payments_sent[i % len(payments_sent)]
        other = payment(p.bank_code, self.customers[0], p.amount + 7, stan=p.stan, transmitted=p.transmitted,
                        at=p.received_at)
        assert post(self.engine, [other], CAL)[0].response_code == "94"

    @rule(c=st.integers(0, 2), amount=st.integers(1, 3_000))
    def new_bill(self, c, amount):
        self._flush()
        with self.engine.begin() as conn:
            add_bill(conn, self.customers[c], f"2026{next(self.period) % 12 + 1:02d}", amount,
                     bill_id=f"X{self.run}{c}{self._tick()}")

    @invariant()
    def ledger_verifies(self):
        if not self.pending:
            assert verify(self.engine) == []

    def teardown(self):
        self._flush()
        assert verify(self.engine) == []


def st_bank(c: int) -> str:
    return "0102" if c % 2 == 0 else "0103"


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=25, stateful_step_count=20, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
