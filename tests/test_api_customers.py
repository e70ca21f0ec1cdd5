"""Customer look-up over real HTTP on SQLite and PostgreSQL, of data made by the ledger's own paths:
bills, counter payments and a reversal (the posting module), a bill correction (red reversal and
replacement), a refund, a direct debit sent and declined, the SMS notices those wrote."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from api.pagination import page_limit
from api.problems import BASE
from api_harness import T0, add_client_with_key, operator_name, running_service
from config.clock import Clock
from config.settings import ApiConfig
from ledger.corrections import correct_bill
from ledger.debits import create_debit, debit_declined, mark_debit_sent
from ledger.refunds import request_refund
from ledger.schema import agreements
from ledger.synchronous_posting import post
from ledger_helpers import add_banks, add_bills, add_customer, payment, prepaid_of, reversal

C1, MOBILE = "C1", "13812345678"


def seed(engine) -> dict:
    clock = Clock()
    with engine.begin() as conn:
        add_banks(conn, "0102")
        add_customer(conn, C1, name="王小明", mobile=MOBILE)
        add_customer(conn, "C2", name="王大明", mobile="13900000000")
        add_customer(conn, "C3", name="李四", mobile=MOBILE)
        add_bills(conn, [(C1, "202609", 10_000, 100), (C1, "202610", 20_000, 0), (C1, "202611", 30_000, 0)])
        conn.execute(insert(agreements), [{"customer_no": C1, "bank_code": "0102", "account_no": "6222000011112222",
                                           "account_name": "王小明", "status": "A", "debit_limit": 0, "version": 1,
                                           "updated_at": T0}])
    paid = payment("0102", C1, 60_100 + 5_000, at=T0)                  # every bill, 5000 fen prepaid
    undone = payment("0102", C1, 2_000, at=T0 + timedelta(minutes=1))
    post(engine, [paid, undone], clock)
    post(engine, [reversal(undone)], clock)
    correction = correct_bill(engine, "BC1202610", principal=18_000, penalty=0, actor="operator:op-clerk",
                              reason="meter misread", now=T0 + timedelta(minutes=2))
    request_refund(engine, C1, 1_000, actor="operator:op-clerk", reason="asked", now=T0 + timedelta(minutes=3))
    with engine.begin() as conn:
        debit_id = create_debit(conn, bank_code="0102", customer_no=C1, account_no="6222000011112222",
                                bills_to_pay=[("BC1202611", 30_000)], at=T0 + timedelta(minutes=4))
        mark_debit_sent(conn, debit_id, transmitted="1201100500", stan="000777", rrn="120110000777",
                        business_date=T0.date(), at=T0 + timedelta(minutes=5))
    debit_declined(engine, debit_id, T0 + timedelta(minutes=6), "51", "insufficient funds")
    with engine.connect() as conn:
        prepaid = prepaid_of(conn, C1)
    return {"correction": correction, "debit_id": debit_id, "prepaid": prepaid}


@pytest.fixture
def service(db_url):
    with running_service(db_url, ApiConfig(page_limit_default=50, page_limit_max=50)) as running:
        running.seeded = seed(running.engine)
        yield running


def every_page(http, path: str, **params) -> list[dict]:
    items, cursor = [], None
    for _ in range(100):
        page = http.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("no last page")


def test_one_customer_with_everything_the_ledger_recorded(service):
    with service.client(service.login(operator_name("clerk"))) as http:
        answer = http.get(f"/v1/customers/{C1}")
    assert answer.status_code == 200, answer.text
    c = answer.json()
    assert (c["name"], c["mobile"], c["prepay_allowed"]) == ("王小明", MOBILE, True)   # in full, looked up by number
    assert c["prepaid_balance_fen"] == service.seeded["prepaid"] and isinstance(c["prepaid_balance_fen"], int)
    assert sum(m["amount_fen"] for m in c["prepaid_movements"]["items"]) == c["prepaid_balance_fen"]
    assert {m["kind"] for m in c["prepaid_movements"]["items"]} >= {"excess", "refund"}
    bills = {b["bill_id"]: b for b in c["bills"]["items"]}
    red, new = service.seeded["correction"].reversing_bill_id, service.seeded["correction"].new_bill_id
    assert bills["BC1202610"]["reversed_by"]["bill_id"] == red and bills["BC1202610"]["replaced_by"] == new
    assert bills[red]["kind"] == "R" and bills[red]["principal_fen"] == -20_000
    assert bills[new]["replaces_bill_id"] == "BC1202610" and bills[new]["principal_fen"] == 18_000
    assert bills["BC1202609"]["allocated_fen"] == 10_100
    assert [b["period"] for b in c["bills"]["items"]] == sorted((b["period"] for b in c["bills"]["items"]),
                                                                  reverse=True)
    pays = c["payments"]["items"]
    assert [p["amount_fen"] for p in pays] == [2_000, 65_100]                          # newest first
    assert pays[0]["reversal"]["amount_fen"] == 2_000 and pays[1]["reversal"] is None
    (debit,) = c["debits"]["items"]
    assert debit["debit_id"] == service.seeded["debit_id"] and debit["state"] == "declined"
    assert [a["event"] for a in debit["attempts"]] == ["created", "sent", "declined"]
    assert c["agreements"][0]["account_no"] == "6222000011112222" and c["agreements"][0]["debit_limit_fen"] == 0
    assert c["notices"]["items"], "the payments wrote SMS notices"
    assert all(n["mobile"] == "138****5678" for n in c["notices"]["items"])


def test_each_list_pages_with_cursors_to_the_same_items(service):
    with service.client(service.login(operator_name("auditor"))) as http:
        detail = http.get(f"/v1/customers/{C1}").json()
        for name, path in (("bills", "bills"), ("payments", "payments"), ("prepaid_movements", "prepaid-movements"),
                           ("debits", "debits"), ("notices", "notices")):
            paged = every_page(http, f"/v1/customers/{C1}/{path}", limit=2)
            assert paged == detail[name]["items"], name
        first = http.get(f"/v1/customers/{C1}/bills", params={"limit": 2}).json()
        assert len(first["items"]) == 2 and first["next_cursor"]
        assert http.get(f"/v1/customers/{C1}/bills", params={"limit": 1000}).json()["next_cursor"] is None
        bad = http.get(f"/v1/customers/{C1}/bills", params={"cursor": "bm90LWEta2V5"})
        assert bad.status_code == 400 and bad.json()["type"] == BASE + "bad-cursor"
        missing = http.get("/v1/customers/NOPE/payments")
        assert missing.status_code == 404 and missing.json()["type"] == BASE + "not-found"


def test_search_by_name_or_mobile_masks_mobiles_and_pages(service):
    with service.client(add_client_with_key(service.engine, "callcentre", ["customer.read"])) as http:
        by_name = every_page(http, "/v1/customers", name="王")
        assert [(c["customer_no"], c["mobile"]) for c in by_name] == [(C1, "138****5678"), ("C2", "139****0000")]
        by_mobile = every_page(http, "/v1/customers", mobile=MOBILE)
        assert [c["customer_no"] for c in by_mobile] == [C1, "C3"]
        assert every_page(http, "/v1/customers", name="王", mobile=MOBILE)[0]["customer_no"] == C1
        assert every_page(http, "/v1/customers", name="100%") == []         # LIKE's wildcards are literal
        assert http.get("/v1/customers", params={"mobile": "138"}).json()["type"] == BASE + "invalid-request"
        nothing = http.get("/v1/customers")
        assert nothing.status_code == 422 and nothing.json()["type"] == BASE + "invalid-request"


def test_a_page_is_cut_to_the_configured_maximum():
    assert page_limit(None, 50, 200) == 50 and page_limit(1000, 50, 200) == 200 and page_limit(3, 50, 200) == 3
