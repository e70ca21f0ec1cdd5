"""A large refund's two approvals over real HTTP on SQLite and PostgreSQL: the requester, the
accounting approver, the director approver; a third operator refused, the same person refused
for the second level, the requester refused; paid only after both; the payout recorded; every
changing POST idempotent."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from api.problems import BASE
from api_harness import T0, operator_name, running_service
from config.clock import Clock
from identity_helpers import ADMIN, FAST, PASSWORD
from ledger.identity import add_operator
from ledger.schema import audit_log, journal_lines, refund_decisions
from ledger.synchronous_posting import post
from ledger_helpers import add_banks, add_customer, assert_ledger_verifies, payment, prepaid_of

CUSTOMER = "C1"


@pytest.fixture
def service(db_url):
    with running_service(db_url) as running:
        with running.engine.begin() as conn:
            add_banks(conn, "0102")
            add_customer(conn, CUSTOMER)
            add_operator(conn, T0, ADMIN, "op-both", "Both Levels", ["accounting-approver", "director-approver"],
                         PASSWORD, FAST)
            add_operator(conn, T0, ADMIN, "op-asker", "Asks And Approves", ["clerk", "accounting-approver"],
                         PASSWORD, FAST)
        post(running.engine, [payment("0102", CUSTOMER, 500_000, at=T0)], Clock())
        yield running


def send(service, user: str, path: str, body: dict, key: str | None = None):
    with service.client(service.login(user)) as http:
        return http.post(path, json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex})


def ask(service, user: str, amount: int = 150_000):
    answer = send(service, user, "/v1/refunds", {"customer_no": CUSTOMER, "amount_fen": amount, "reason": "moving"})
    assert answer.status_code == 201, answer.text
    return answer.json()["refund_id"]


def decide(service, user: str, refund_id: int, decision: str = "approve", key: str | None = None):
    return send(service, user, f"/v1/refunds/{refund_id}/approvals", {"decision": decision, "comment": "seen"}, key)


def balance(service) -> int:
    with service.engine.connect() as conn:
        return prepaid_of(conn, CUSTOMER)


def refused(answer, slug: str = "forbidden", status: int = 403) -> bool:
    return answer.status_code == status and answer.json()["type"] == BASE + slug


def test_two_approvals_end_to_end(service):
    refund_id = ask(service, operator_name("clerk"))
    assert refused(decide(service, operator_name("operations"), refund_id))        # a third operator: no level
    assert refused(decide(service, operator_name("clerk"), refund_id))             # the requester: no level
    key = uuid.uuid4().hex
    first = decide(service, operator_name("accounting-approver"), refund_id, key=key)
    assert first.status_code == 200 and first.json()["status"] == "pending", first.text
    again = decide(service, operator_name("accounting-approver"), refund_id, key=key)   # a retry changes nothing
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert refused(decide(service, operator_name("accounting-approver"), refund_id))  # its level is given
    assert balance(service) == 500_000
    paid = decide(service, operator_name("director-approver"), refund_id)
    assert paid.status_code == 200 and paid.json()["status"] == "paid"
    assert [(d["level"], d["decided_by"]) for d in paid.json()["decisions"]] == [
        ("accounting", "operator:op-accounting-approver"), ("director", "operator:op-director-approver")]
    assert balance(service) == 350_000
    with service.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(refund_decisions)).scalar_one() == 2
        actors = conn.execute(select(audit_log.c.actor).where(audit_log.c.action == "refund.approve")
                              .order_by(audit_log.c.id)).scalars().all()
    assert actors == ["operator:op-accounting-approver", "operator:op-director-approver"]
    # read it back, and in the list by status
    with service.client(service.login(operator_name("auditor"))) as http:
        shown = http.get(f"/v1/refunds/{refund_id}")
        assert shown.status_code == 200 and shown.json() == paid.json()
        assert http.get("/v1/refunds/999999").json()["type"] == BASE + "not-found"
        assert [r["refund_id"] for r in http.get("/v1/refunds", params={"status": "paid"}).json()["items"]] == [
            refund_id]
        assert http.get("/v1/refunds", params={"status": "pending"}).json()["items"] == []


def test_the_same_person_cannot_give_both_and_the_requester_none(service):
    refund_id = ask(service, operator_name("clerk"))
    assert decide(service, "op-both", refund_id).json()["decisions"][0]["level"] == "accounting"
    second = decide(service, "op-both", refund_id)
    assert refused(second) and "two different people" in second.json()["detail"]
    own = ask(service, "op-asker")
    answer = decide(service, "op-asker", own)
    assert refused(answer) and "asked for" in answer.json()["detail"]
    rejected = decide(service, operator_name("director-approver"), own, "reject")
    assert rejected.json()["status"] == "rejected"
    assert refused(decide(service, operator_name("accounting-approver"), own), "refused", 422)
    no_reason = send(service, operator_name("director-approver"), f"/v1/refunds/{refund_id}/approvals",
                     {"decision": "reject"})
    assert refused(no_reason, "invalid-request", 422)


def test_the_payout_is_recorded_once(service):
    refund_id = ask(service, operator_name("clerk"), amount=5_000)           # small: paid at once
    pending = ask(service, operator_name("clerk"))
    finance = operator_name("finance")
    assert refused(send(service, finance, f"/v1/refunds/{pending}/payout", {"reference": "TX-1"}), "refused", 422)
    key = uuid.uuid4().hex
    out = send(service, finance, f"/v1/refunds/{refund_id}/payout", {"reference": "TX-1"}, key)
    assert out.status_code == 200, out.text
    assert (out.json()["payout_reference"], out.json()["paid_out_by"]) == ("TX-1", "operator:op-finance")
    again = send(service, finance, f"/v1/refunds/{refund_id}/payout", {"reference": "TX-1"}, key)
    assert again.json() == out.json() and again.headers["Idempotent-Replayed"] == "true"
    assert refused(send(service, finance, f"/v1/refunds/{refund_id}/payout", {"reference": "TX-2"}), "refused", 422)
    assert balance(service) == 495_000
    with service.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)
                            .where(audit_log.c.action == "refund.payout")).scalar_one() == 1
        moved = dict(conn.execute(select(journal_lines.c.account, func.sum(journal_lines.c.amount))
                                  .where(journal_lines.c.account.in_(("refunds_payable", "collection")))
                                  .group_by(journal_lines.c.account)).all())
    assert moved == {"refunds_payable": 0, "collection": -5_000}   # paid out once, from the collection account
    assert_ledger_verifies(service.engine)
