"""Log-in, lock-out, throttling, session expiry and API keys over real HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest

from api.problems import BASE
from api_harness import add_client_with_key, operator_name, running_service
from config.settings import ApiConfig
from identity_helpers import PASSWORD, audit_rows

CLERK = operator_name("clerk")


def assert_problem(answer, status: int, slug: str) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["type"] == BASE + slug and body["status"] == status and body["title"], body
    return body


@pytest.fixture
def service(db_url):
    with running_service(db_url) as running:
        yield running


def test_login_me_and_logout_are_audited_with_the_clients_address(service):
    token = service.login(CLERK)
    with service.client(token) as http:
        me = http.get("/v1/me").json()
        assert me["actor"] == f"operator:{CLERK}" and me["roles"] == ["clerk"]
        assert "refund.request" in me["permissions"] and me["session_id"]
        assert http.delete("/v1/sessions/current").status_code == 204
        assert_problem(http.get("/v1/me"), 401, "not-authenticated")
    login = [r for r in audit_rows(service.engine, "login") if r["actor"] == f"operator:{CLERK}"]
    logout = audit_rows(service.engine, "logout")
    assert login[0]["details"]["source"] == "api 127.0.0.1"
    assert logout[0]["actor"] == f"operator:{CLERK}" and logout[0]["details"]["source"] == "api 127.0.0.1"


def test_a_wrong_password_is_a_401_problem_and_repeated_ones_lock_the_account(service):
    with service.client() as http:
        for _ in range(5):   # access.max_failed_logins
            assert_problem(http.post("/v1/sessions", json={"user": CLERK, "password": "wrong-one-42X"}), 401,
                           "bad-credentials")
        locked = assert_problem(http.post("/v1/sessions", json={"user": CLERK, "password": PASSWORD}), 423, "locked")
        assert "locked" in locked["detail"]
        service.advance(timedelta(minutes=15))   # access.lockout_minutes
        assert http.post("/v1/sessions", json={"user": CLERK, "password": PASSWORD}).status_code == 201
    assert service.metric("gridpay_auth_refusals_total", {"reason": "bad_password"}) == 5
    assert service.metric("gridpay_auth_refusals_total", {"reason": "locked"}) == 1
    assert [r["reason"] for r in audit_rows(service.engine, "login.refused")] == ["bad_password"] * 5 + ["locked"]


def test_unauthenticated_requests_are_401_problems_and_counted(service):
    with service.client() as http:
        body = assert_problem(http.get("/v1/customers/C1"), 401, "not-authenticated")
        assert body["instance"] == "/v1/customers/C1"
    with service.client("not-a-token") as http:
        assert_problem(http.get("/v1/me"), 401, "not-authenticated")
    assert service.metric("gridpay_auth_refusals_total", {"reason": "no_credentials"}) == 1
    assert service.metric("gridpay_auth_refusals_total", {"reason": "no_session"}) == 1


def test_sessions_expire_when_idle_and_at_their_lifetime(service):
    token = service.login(CLERK)
    with service.client(token) as http:
        service.advance(timedelta(minutes=29))
        assert http.get("/v1/me").status_code == 200          # each use moves the idle clock
        service.advance(timedelta(minutes=30))                 # access.session_idle_minutes
        assert_problem(http.get("/v1/me"), 401, "session-expired")
    token = service.login(CLERK)
    with service.client(token) as http:
        for _ in range(24):                                    # used every 29:59 for 11:59:36: never idle
            service.advance(timedelta(minutes=29, seconds=59))
            assert http.get("/v1/me").status_code == 200
        service.advance(timedelta(minutes=1))
        assert_problem(http.get("/v1/me"), 401, "session-expired")   # access.session_lifetime_hours = 12
    assert {r["reason"] for r in audit_rows(service.engine, "session.refused")} == {"session_idle", "session_expired"}


def test_api_keys_authenticate_clients_with_their_scopes_until_they_expire(service):
    key = add_client_with_key(service.engine, "callcentre", ["customer.read"], days=2)
    with service.client(key) as http:
        me = http.get("/v1/me").json()
        assert me["actor"] == "client:callcentre" and me["permissions"] == ["customer.read"] and me["key_id"]
        assert http.get("/v1/customers", params={"name": "x"}).status_code == 200
        assert_problem(http.post("/v1/refunds", json={"customer_no": "C1", "amount_fen": 1, "reason": "r"},
                                 headers={"Idempotency-Key": "k1"}), 403, "forbidden")
        assert_problem(http.delete("/v1/sessions/current"), 400, "not-a-session")
        service.advance(timedelta(days=3))
        assert_problem(http.get("/v1/me"), 401, "key-expired")
    with service.client(key[:-3] + "AAA") as http:
        assert_problem(http.get("/v1/me"), 401, "bad-key")
    forbidden = audit_rows(service.engine, "access.forbidden")
    assert forbidden[0]["actor"] == "client:callcentre" and forbidden[0]["details"]["permission"] == "refund.request"


def test_log_ins_from_one_address_are_throttled_before_any_password_is_checked(sqlite_url):
    with running_service(sqlite_url, ApiConfig(login_attempts_per_minute=3)) as service:
        with service.client() as http:
            for _ in range(3):
                assert_problem(http.post("/v1/sessions", json={"user": "nobody", "password": "x"}), 401,
                               "bad-credentials")
            throttled = http.post("/v1/sessions", json={"user": CLERK, "password": PASSWORD})
            assert_problem(throttled, 429, "too-many-logins")
            assert int(throttled.headers["Retry-After"]) >= 1
            service.advance(timedelta(minutes=1))
            assert http.post("/v1/sessions", json={"user": CLERK, "password": PASSWORD}).status_code == 201
        assert service.metric("gridpay_auth_refusals_total", {"reason": "throttled"}) == 1
        (row,) = [r for r in audit_rows(service.engine, "login.refused") if r["reason"] == "throttled"]
        assert row["details"]["source"] == "api 127.0.0.1" and row["details"]["claimed"] == CLERK


def test_metrics_count_requests_by_route_template_and_status(service):
    token = service.login(CLERK)
    with service.client(token) as http:
        http.get("/v1/customers/C404")
        http.get("/no/such/path")
        text = http.get("/metrics").text
    assert 'gridpay_api_requests_total{method="GET",route="/v1/customers/{customer_no}",status="404"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert 'gridpay_api_request_seconds_bucket{le="0.005",method="GET",route="/v1/customers/{customer_no}"}' in text
    with service.client() as http:
        assert http.get("/healthz").json() == {"status": "up"}
        assert http.get("/readyz").json() == {"status": "ready", "database": "ok"}
    assert service.metric("gridpay_db_up", {}) == 1
