"""The two-level approval of a large refund, decided by authenticated principals (the HTTP
service's path), on SQLite and PostgreSQL: accounting and director, two people, not the requester;
a rejection at either level ends it; paid (PrepaidRefund) only when both approved."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from config.settings import BusinessConfig
from ledger.errors import Refused
from ledger.identity import Forbidden, Principal
from ledger.identity.roles import ROLES
from ledger.refunds import (
    approve_refund, decide_refund_in, load_refund, record_payout_in, reject_refund, request_refund,
)
from ledger.schema import audit_log
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, add_customer, assert_ledger_verifies, new_engine, payment, prepaid_of

BANK = "01020000"
BUSINESS = BusinessConfig()


def operator(name: str, *roles: str) -> Principal:
    permissions = frozenset().union(*(ROLES[r] for r in roles))
    return Principal(1, "operator", name, name.title(), roles, permissions)


CLERK, OTHER_CLERK = operator("li", "clerk"), operator("wu", "clerk")
ACCOUNTING, DIRECTOR = operator("zhao", "accounting-approver"), operator("sun", "director-approver")
BOTH = operator("qian", "accounting-approver", "director-approver")


@pytest.fixture
def engine(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, BANK)
        add_customer(conn, "C1")
        add_customer(conn, "C2", ctype="N", mobile=None)
    assert post(engine, [payment(BANK, "C1", 500_000, at=T0)])[0].ok
    assert post(engine, [payment(BANK, "C2", 2_000_000, at=T0)])[0].ok
    yield engine
    engine.dispose()


def decide(engine, refund_id, who, decision="A", note="checked"):
    with engine.begin() as conn:
        return decide_refund_in(conn, refund_id, decision, note, business=BUSINESS, now=T0, approver=who)


def test_both_levels_by_two_people_neither_the_requester(db_url, engine):
    refund = request_refund(engine, "C1", 100_000, actor=CLERK.actor, reason="moving out", now=T0)
    assert refund.status == "pending"
    for who, code in ((CLERK, "forbidden"), (OTHER_CLERK, "forbidden")):
        with pytest.raises(Forbidden) as refused:
            decide(engine, refund.refund_id, who)
        assert refused.value.code == code
    first = decide(engine, refund.refund_id, BOTH)            # holds both: takes the first missing level
    assert (first.status, first.approvals()) == ("pending", {"accounting": BOTH.actor})
    with pytest.raises(Forbidden) as refused:                 # the same person cannot give the second
        decide(engine, refund.refund_id, BOTH)
    assert refused.value.code == "second_approval_same_person"
    with pytest.raises(Forbidden) as refused:
        decide(engine, refund.refund_id, ACCOUNTING)
    assert refused.value.code == "already_approved"
    with engine.connect() as conn:
        assert prepaid_of(conn, "C1") == 500_000              # nothing paid after one approval
    paid = decide(engine, refund.refund_id, DIRECTOR)
    assert paid.status == "paid"
    assert [(d.level, d.decision, d.decided_by) for d in paid.decisions] == [
        ("accounting", "approve", BOTH.actor), ("director", "approve", DIRECTOR.actor)]
    with engine.connect() as conn:
        assert prepaid_of(conn, "C1") == 400_000
    assert_ledger_verifies(db_url)


def test_the_requester_cannot_approve_even_with_the_permission(engine):
    approver_clerk = operator("li", "clerk", "accounting-approver")
    refund = request_refund(engine, "C2", 1_000_000, actor=approver_clerk.actor, reason="x", now=T0)
    with pytest.raises(Forbidden) as refused:
        decide(engine, refund.refund_id, approver_clerk)
    assert refused.value.code == "own_request"


def test_a_rejection_at_either_level_ends_it(engine):
    refund = request_refund(engine, "C2", 1_000_000, actor=CLERK.actor, reason="overpaid", now=T0)
    decide(engine, refund.refund_id, ACCOUNTING)
    rejected = decide(engine, refund.refund_id, DIRECTOR, "J", "not proven")
    assert rejected.status == "rejected"
    with pytest.raises(Refused, match="already rejected"):
        decide(engine, refund.refund_id, BOTH)
    with engine.connect() as conn:
        assert prepaid_of(conn, "C2") == 2_000_000
        levels = [(r.action, r.details) for r in conn.execute(
            select(audit_log.c.action, audit_log.c.details).where(audit_log.c.object_type == "refund",
                                                                  audit_log.c.object_id == str(refund.refund_id))
            .order_by(audit_log.c.id))]
    assert [a for a, _ in levels] == ["refund.request", "refund.approve", "refund.reject"]
    assert '"director"' in str(levels[2][1])


def test_the_payout_is_recorded_once_on_a_paid_refund(engine):
    small = request_refund(engine, "C1", 5_000, actor=CLERK.actor, reason="x", now=T0)
    big = request_refund(engine, "C1", 100_000, actor=CLERK.actor, reason="x", now=T0)
    with engine.begin() as conn:
        with pytest.raises(Refused, match="only a paid refund"):
            record_payout_in(conn, big.refund_id, actor="operator:cai", reference="TX1", now=T0)
    with engine.begin() as conn:
        out = record_payout_in(conn, small.refund_id, actor="operator:cai", reference="TX1", now=T0)
    assert (out.paid_out_by, out.payout_reference) == ("operator:cai", "TX1")
    with engine.begin() as conn:
        with pytest.raises(Refused, match="paid out already"):
            record_payout_in(conn, small.refund_id, actor="operator:cai", reference="TX2", now=T0)
    with engine.connect() as conn:
        assert load_refund(conn, small.refund_id).payout_reference == "TX1"
        assert prepaid_of(conn, "C1") == 495_000


def test_the_engine_calls_take_an_authenticated_approver(engine):
    """What a command run by an authenticated operator calls: the level follows the operator's role."""
    refund = request_refund(engine, "C1", 100_000, actor=CLERK.actor, reason="x", now=T0)
    first = approve_refund(engine, refund.refund_id, approver=DIRECTOR, now=T0)
    assert first.approvals() == {"director": DIRECTOR.actor}
    with pytest.raises(Forbidden):
        reject_refund(engine, refund.refund_id, approver=CLERK, reason="no", now=T0)
    assert approve_refund(engine, refund.refund_id, approver=ACCOUNTING, now=T0).status == "paid"
