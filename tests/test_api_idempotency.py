"""``Idempotency-Key`` over real HTTP on SQLite and PostgreSQL, with a real change: a refund of a
prepaid balance paid through the posting module (``POST /v1/refunds``)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from api.problems import BASE
from api_harness import T0, add_client_with_key, operator_name, running_service
from config.clock import Clock
from identity_helpers import audit_rows
from ledger.schema import refunds
from ledger.synchronous_posting import post
from ledger_helpers import add_banks, add_customer, payment, prepaid_of

CUSTOMER = "C1"
PREPAID = 50_000


@pytest.fixture
def service(db_url):
    with running_service(db_url) as running:
        with running.engine.begin() as conn:
            add_banks(conn, "0102")
            add_customer(conn, CUSTOMER)
        post(running.engine, [payment("0102", CUSTOMER, PREPAID, at=T0)], Clock())   # no bills: all prepaid
        yield running


def refund_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(refunds)).scalar_one()


def balance(engine) -> int:
    with engine.connect() as conn:
        return prepaid_of(conn, CUSTOMER)


def ask(http, key: str | None, amount: int = 1_000, reason: str = "moved away"):
    headers = {"Idempotency-Key": key} if key else {}
    return http.post("/v1/refunds", json={"customer_no": CUSTOMER, "amount_fen": amount, "reason": reason},
                     headers=headers)


def test_a_retry_gets_the_first_answer_and_changes_nothing(service):
    with service.client(service.login(operator_name("clerk"))) as http:
        first = ask(http, "key-1")
        assert first.status_code == 201, first.text
        refund = first.json()
        assert refund["status"] == "paid" and refund["amount_fen"] == 1_000 and isinstance(refund["amount_fen"], int)
        assert refund["requested_by"] == "operator:op-clerk"
        again = http.post("/v1/refunds", headers={"Idempotency-Key": "key-1"},   # same body, other key order
                          json={"reason": "moved away", "amount_fen": 1_000, "customer_no": CUSTOMER})
        assert again.status_code == 201 and again.json() == refund and again.headers["Idempotent-Replayed"] == "true"
        other = ask(http, "key-1", amount=2_000)
        assert other.status_code == 422 and other.json()["type"] == BASE + "idempotency-key-reused"
    assert refund_count(service.engine) == 1 and balance(service.engine) == PREPAID - 1_000
    assert len(audit_rows(service.engine, "refund.request")) == 1   # a replay is not a new change


def test_a_changing_post_without_a_key_is_refused(service):
    with service.client(service.login(operator_name("clerk"))) as http:
        answer = ask(http, None)
        assert answer.status_code == 400 and answer.json()["type"] == BASE + "idempotency-key-missing"
    assert refund_count(service.engine) == 0


def test_a_refused_change_releases_its_key(service):
    with service.client(service.login(operator_name("clerk"))) as http:
        refused = ask(http, "key-2", amount=PREPAID + 1)
        assert refused.status_code == 422 and refused.json()["type"] == BASE + "refused"
        assert "prepaid balance of 50000 fen" in refused.json()["detail"]
        assert refund_count(service.engine) == 0
        assert ask(http, "key-2", amount=PREPAID + 1).json()["type"] == BASE + "refused"   # tried again, not replayed
        bad = http.post("/v1/refunds", headers={"Idempotency-Key": "key-3"},
                        json={"customer_no": CUSTOMER, "amount_fen": 10.5, "reason": "x"})
        assert bad.status_code == 422 and bad.json()["type"] == BASE + "invalid-request"
        assert bad.json()["errors"][0]["loc"] == ["body", "amount_fen"]
        assert ask(http, "key-3").status_code == 201   # a body that failed validation claimed nothing
    assert refund_count(service.engine) == 1


def test_ten_concurrent_retries_with_one_key_make_exactly_one_change(service):
    token = service.login(operator_name("clerk"))

    def attempt(_):
        with service.client(token) as http:
            return ask(http, "key-concurrent", amount=700)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(attempt, range(10)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409} and 201 in statuses, [a.text for a in answers]
    assert len({a.json()["refund_id"] for a in answers if a.status_code == 201}) == 1
    for busy in (a for a in answers if a.status_code == 409):
        assert busy.json()["type"] == BASE + "idempotency-in-progress" and busy.headers["Retry-After"]
    assert refund_count(service.engine) == 1 and balance(service.engine) == PREPAID - 700
    with service.client(token) as http:
        replay = ask(http, "key-concurrent", amount=700)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"


def test_keys_belong_to_their_principal_and_expire(service):
    with service.client(service.login(operator_name("clerk"))) as http:
        assert ask(http, "shared").status_code == 201
    with service.client(add_client_with_key(service.engine, "billing", ["refund.request"])) as http:
        assert ask(http, "shared").headers.get("Idempotent-Replayed") is None      # another principal's key
    assert refund_count(service.engine) == 2
    service.advance(timedelta(hours=24, seconds=1))                                # api.idempotency_hours
    with service.client(service.login(operator_name("clerk"))) as http:
        fresh = ask(http, "shared")
        assert fresh.status_code == 201 and fresh.headers.get("Idempotent-Replayed") is None
    assert refund_count(service.engine) == 3 and balance(service.engine) == PREPAID - 3_000
