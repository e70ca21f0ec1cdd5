"""Back office over real HTTP on SQLite and PostgreSQL: a bill correction, a report in JSON and
CSV, the billing feed read after postings; each changing POST retried with its key changes
nothing more."""
from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from api.problems import BASE
from api_harness import T0, add_client_with_key, operator_name, post_and_retry, running_service
from config.clock import Clock
from ledger.schema import audit_log, bills, payments
from ledger.synchronous_posting import post
from ledger_helpers import add_banks, add_bill, add_customer, payment, prepaid_of

BANK = "0102"


@pytest.fixture
def service(db_url):
    with running_service(db_url) as running:
        with running.engine.begin() as conn:
            add_banks(conn, BANK)
            add_customer(conn, "C1")
            add_customer(conn, "C2", ctype="N")
            add_bill(conn, "C1", "202611", 10_000, 100, bill_id="B1")
        post(running.engine, [payment(BANK, "C1", 10_100, at=T0), payment(BANK, "C2", 7_000, at=T0)], Clock())
        yield running


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_a_bill_correction(service):
    body = {"bill_id": "B1", "principal_fen": 8_000, "penalty_fen": 0, "reason": "meter misread"}
    with service.client(service.login(operator_name("clerk"))) as http:
        done = post_and_retry(http, "/v1/corrections", body)
        assert done.status_code == 201, done.text
        out = done.json()
        assert out["original_bill_id"] == "B1" and out["moved_to_prepaid_fen"] == 10_100
        assert out["new_bill_paid"] is True and out["prepaid_balance_fen"] == 2_100
        again = http.post("/v1/corrections", json=body, headers={"Idempotency-Key": "other"})
        assert again.status_code == 422 and again.json()["type"] == BASE + "refused"   # already reversed
        bad = http.post("/v1/corrections", json={**body, "principal_fen": 10.5}, headers={"Idempotency-Key": "k"})
        assert bad.status_code == 422 and bad.json()["type"] == BASE + "invalid-request"
    assert count(service.engine, bills) == 3                      # the original, its red bill, the replacement
    with service.engine.connect() as conn:
        assert prepaid_of(conn, "C1") == 2_100
    assert count(service.engine, audit_log, audit_log.c.actor == "operator:op-clerk",
                 audit_log.c.object_type == "bill") >= 1


def test_reports_in_json_and_csv(service):
    with service.engine.connect() as conn:
        day = conn.execute(select(payments.c.business_date)).scalars().first()
    with service.client(service.login(operator_name("finance"))) as http:
        as_json = http.get("/v1/reports/daily", params={"date": day.isoformat()})
        assert as_json.status_code == 200, as_json.text
        (by_bank,) = as_json.json()["sections"]                   # the report definition's JSON: amounts in fen
        assert by_bank["totals"]["collected"] == 17_100 and isinstance(by_bank["totals"]["collected"], int)
        assert {"key": "collected", "label": "收款金额", "kind": "money"} in by_bank["columns"]
        assert by_bank["rows"][0]["bank_code"] == BANK
        as_csv = http.get("/v1/reports/daily", params={"date": day.isoformat(), "format": "csv"})
        assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(as_csv.text.lstrip("\ufeff"))))   # the report definition's CSV
        assert rows[6][0] == f'="{BANK}"'                         # a text cell: the leading zero stays
        assert rows[-1][5:7] == ["171.00", "17100"]               # collected in yuan and in fen
        (recon,) = http.get("/v1/reports/recon", params={"date": day.isoformat()}).json()["sections"]
        assert recon["rows"] == [] and recon["totals"] is None         # no bank file reconciled that day
        (receivables,) = http.get("/v1/reports/receivables", params={"period": "202611"}).json()["sections"]
        assert receivables["totals"]["billed"] == 10_100
        missing = http.get("/v1/reports/daily")
        assert missing.status_code == 422 and missing.json()["type"] == BASE + "invalid-request"
    with service.client(service.login(operator_name("clerk"))) as http:
        assert http.get("/v1/reports/daily", params={"date": day.isoformat()}).status_code == 403


def test_the_feed_over_http_after_postings(service):
    key = add_client_with_key(service.engine, "billing", ["feed.read"])
    with service.client(key) as http:
        first = http.get("/v1/feed", params={"after": 0, "limit": 1})
        assert first.status_code == 200, first.text
        page = first.json()
        assert [r["seq"] for r in page["items"]] == [1] and page["next_after"] == 1
        rest = http.get("/v1/feed", params={"after": page["next_after"]}).json()
        seen = page["items"] + rest["items"]
        assert [r["seq"] for r in seen] == list(range(1, len(seen) + 1))
        assert {r["customer_no"] for r in seen} == {"C1", "C2"}
        assert sum(r["amount_fen"] for r in seen if r["kind"] == "payment") == 17_100
        assert seen[0]["at"].endswith("+00:00")
        post(service.engine, [payment(BANK, "C2", 500, at=T0)], Clock())
        newer = http.get("/v1/feed", params={"after": rest["next_after"]}).json()
        assert [r["amount_fen"] for r in newer["items"]] == [500]
        assert http.get("/v1/feed", params={"after": newer["next_after"]}).json() == {
            "items": [], "next_after": newer["next_after"]}
        assert http.get("/v1/feed", params={"after": -1}).status_code == 422
    with service.client(add_client_with_key(service.engine, "callcentre", ["customer.read"])) as http:
        assert http.get("/v1/feed").status_code == 403
