"""``ledger.debits.mark_debit_sent``: a debit's identity is given once and never changes - except
when the bank answered A0 (docs/spec/INTERFACE.md §4.2, §4.7): then it is sent again under a new
identity (7, 11 and 37), and its history keeps both."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from ledger.debits import create_debit, debit_approved, mark_debit_sent
from ledger.schema import debit_attempts, debits, payments
from ledger_helpers import T0, add_banks, add_bills, add_customer, assert_ledger_verifies, new_engine

OLD = ("1123100000", "900001", "000000000001")
NEW = ("1123100001", "900002", "100000000001")


@pytest.fixture
def ledger(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, "0102")
        add_customer(conn, "2001")
        add_bills(conn, [("2001", "202609", 10_000, 100)])
    yield engine
    assert_ledger_verifies(engine)
    engine.dispose()


def sent_debit(engine) -> int:
    with engine.begin() as conn:
        debit_id = create_debit(conn, bank_code="0102", customer_no="2001", account_no="6222000011112222",
                                bills_to_pay=[("B2001202609", 10_100)], at=T0)
        mark_debit_sent(conn, debit_id, transmitted=OLD[0], stan=OLD[1], rrn=OLD[2],
                        business_date=date(2026, 11, 23), at=T0)
    return debit_id


def send(engine, debit_id, identity, **kw):
    with engine.begin() as conn:
        mark_debit_sent(conn, debit_id, transmitted=identity[0], stan=identity[1], rrn=identity[2],
                        business_date=date(2026, 11, 23), at=T0 + timedelta(seconds=1), **kw)


def test_after_A0_the_debit_is_sent_under_a_new_identity_and_both_are_kept(ledger):
    debit_id = sent_debit(ledger)
    with pytest.raises(ValueError, match="was sent as"):
        send(ledger, debit_id, NEW)                                   # no other change of identity
    with pytest.raises(ValueError, match="new field 7"):
        send(ledger, debit_id, (OLD[0], NEW[1], NEW[2]), after_a0=OLD)  # field 7 must be new too
    with pytest.raises(ValueError, match="new field 7"):
        send(ledger, debit_id, (NEW[0], NEW[1], OLD[2]), after_a0=OLD)  # and the RRN
    with pytest.raises(ValueError, match="not sent as"):
        send(ledger, debit_id, NEW, after_a0=("1123095959", OLD[1], OLD[2]))  # A0 to an identity it does not have
    send(ledger, debit_id, NEW, after_a0=OLD)
    with pytest.raises(ValueError, match="not sent as"):
        send(ledger, debit_id, ("1123100002", "900003", "200000000001"), after_a0=OLD)  # the old one is gone
    with ledger.connect() as conn:
        row = conn.execute(select(debits).where(debits.c.debit_id == debit_id)).one()
        history = conn.execute(select(debit_attempts.c.event, debit_attempts.c.response_code, debit_attempts.c.detail)
                               .where(debit_attempts.c.debit_id == debit_id).order_by(debit_attempts.c.id)).all()
    assert (row.transmitted, row.stan, row.rrn, row.state) == (*NEW, "sent")
    assert [(e, c) for e, c, _ in history] == [("created", None), ("sent", None), ("mac_refused", "A0"),
                                               ("sent", None)]
    assert "/".join(OLD) in history[2].detail and "/".join(NEW) in history[3].detail
    # the approval is booked under the identity the bank applied
    assert debit_approved(ledger, debit_id, T0 + timedelta(seconds=2), "123456").response_code == "00"
    with ledger.connect() as conn:
        assert conn.execute(select(payments.c.rrn).where(payments.c.debit_id == debit_id)).scalar_one() == NEW[2]
    with pytest.raises(ValueError, match="not sent as"):
        send(ledger, debit_id, ("1123100002", "900003", "200000000001"), after_a0=NEW)  # approved: never again


def test_a_takeover_reverses_the_identity_last_committed_not_the_one_it_first_read(ledger):
    """Run r16: engine e2 took over a chunk whose debit e1 was sending again after an A0. e2's claim
    had read the debit under its refused identity; e1 committed the new one and sent it; e2's
    reversal named the refused identity, the bank answered it 00 (nothing under it) and kept the
    debit it had applied under the new one. The takeover now reads its orphans again under their
    locks: the reversal names the new identity, and e1 can no longer send the debit again."""
    from config.clock import Clock
    from engines import store

    debit_id = sent_debit(ledger)
    d = debits.c
    with ledger.connect() as conn:                  # e2's claim reads the chunk's debits ...
        stale = conn.execute(select(d.debit_id, d.state, d.customer_no, d.account_no, d.amount, d.transmitted,
                                    d.stan, d.rrn, d.bank_code).where(d.debit_id == debit_id)).all()
    send(ledger, debit_id, NEW, after_a0=OLD)       # ... e1's send after A0 commits first ...
    now = T0 + timedelta(seconds=5)
    with ledger.begin() as conn:                    # ... then e2 takes the debit over
        (item,) = store.take_over_orphans(conn, None, stale, owner="e2", now=now, lease=now + timedelta(seconds=10),
                                          clock=Clock(), actor="system:debit-engine")
    assert (item.original["7"], item.original["11"], item.original["37"].strip()) == NEW
    with ledger.connect() as conn:
        assert conn.execute(select(d.state).where(d.debit_id == debit_id)).scalar_one() == "unknown"
    with pytest.raises(ValueError, match="is unknown"):
        send(ledger, debit_id, ("1123100009", "900009", "200000000001"), after_a0=NEW)
