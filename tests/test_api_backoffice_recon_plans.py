"""Reconciliation and debit plans over real HTTP on SQLite and PostgreSQL: a finance credit
matched many-to-one to two payments and the match undone; an item resolved; a plan added, paused,
resumed and run now, its batch's progress read; each changing POST retried with its key changes
nothing more."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from api.problems import BASE
from api_harness import operator_name, post_and_retry, running_service
from engines.tables import debit_plans
from ledger.recon.finance import reconcile_statement
from ledger.recon_tables import recon_matches
from ledger.schema import debit_batches, payments
from test_engine_support import BANK as DEBIT_BANK, seed
from ledger.recon.matching import reconcile_bank_file
from test_recon_support import BANK, DAY, build_world, write_bank_file


@pytest.fixture
def recon_service(db_url, tmp_path):
    world = build_world(db_url)
    assert reconcile_bank_file(world.engine, write_bank_file(tmp_path, world.lines), actor="alice").status == "applied"
    p1, p3 = world.pays["P1"], world.pays["P3"]
    path = tmp_path / "s.csv"
    path.write_text("booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty\n"
                    f"2026-11-23,2026-11-23,{p1.amount + p3.amount},C,,,LUMP,C1 and C3\n", encoding="utf-8")
    credit = reconcile_statement(world.engine, path, actor="fin").items[0]
    with world.engine.connect() as conn:
        ids = dict(conn.execute(select(payments.c.rrn, payments.c.payment_id)).all())
    world.engine.dispose()
    with running_service(db_url) as service:
        yield service, credit["item_id"], [ids[p1.rrn], ids[p3.rrn]]


def test_match_many_to_one_and_undo(recon_service):
    service, credit, paid = recon_service
    with service.client(service.login(operator_name("clerk"))) as http:
        runs = http.get("/v1/recon/runs").json()["items"]
        assert [r["kind"] for r in runs] == ["finance", "bank"]
        first = http.get("/v1/recon/items", params={"status": "open", "limit": 5}).json()
        rest = http.get("/v1/recon/items", params={"status": "open", "cursor": first["next_cursor"]}).json()
        listed = [i["item_id"] for i in first["items"] + rest["items"]]
        assert credit in listed and listed == sorted(set(listed)) and rest["next_cursor"] is None
        assert {i["bank_code"] for i in http.get("/v1/recon/items", params={"bank": BANK}).json()["items"]} == {BANK}
        assert http.get("/v1/recon/items", params={"bank": "9999"}).json() == {"items": [], "next_cursor": None}
        shown = http.get(f"/v1/recon/items/{credit}/candidates").json()
        assert shown["item"]["item_id"] == credit and shown["candidates"]
        assert http.get("/v1/recon/items/999999/candidates").json()["type"] == BASE + "not-found"
        made = post_and_retry(http, "/v1/recon/matches", {"item_ids": [credit], "payment_ids": paid,
                                                           "note": "one transfer for two bills"})
        assert made.status_code == 201, made.text
        match_id = made.json()["match_id"]
        assert http.get(f"/v1/recon/items/{credit}/candidates").json()["item"]["status"] == "matched"
        again = http.post("/v1/recon/matches", json={"item_ids": [credit], "payment_ids": paid[:1]},
                          headers={"Idempotency-Key": "new"})
        assert again.status_code == 422 and "not open" in again.json()["detail"]
        undone = post_and_retry(http, f"/v1/recon/matches/{match_id}/undo", {"reason": "check again"})
        assert undone.status_code == 200 and undone.json()["reopened_item_ids"] == [credit], undone.text
        assert http.get(f"/v1/recon/items/{credit}/candidates").json()["item"]["status"] == "open"
        resolved = post_and_retry(http, f"/v1/recon/items/{credit}/resolution",
                                  {"action": "accept", "reason": "a lump sum the finance office booked"})
        assert resolved.status_code == 200 and resolved.json()["resolution"] == "accepted"
    with service.engine.connect() as conn:
        match = conn.execute(select(recon_matches).where(recon_matches.c.match_id == match_id)).one()
        assert (match.created_by, match.undone_by) == ("operator:op-clerk", "operator:op-clerk")
        assert conn.execute(select(func.count()).select_from(recon_matches)).scalar() >= 1
    with service.client(service.login(operator_name("finance"))) as http:   # reads, may not match
        (day,) = http.get("/v1/reports/recon", params={"date": DAY.isoformat()}).json()["sections"]
        assert [r["bank_code"] for r in day["rows"]] == [BANK] and day["totals"]["open"] == day["rows"][0]["open"] > 0
        assert http.get("/v1/recon/items").status_code == 200
        assert http.post("/v1/recon/matches", json={"item_ids": [credit]},
                         headers={"Idempotency-Key": "x"}).status_code == 403


def test_a_plan_run_now_makes_a_batch_whose_progress_is_read(db_url):
    engine, numbers = seed(db_url, 4)
    engine.dispose()
    with running_service(db_url) as service:
        with service.client(service.login(operator_name("operations"))) as http:
            plan = {"name": "monthly", "bank_code": DEBIT_BANK, "cron": "0 9 5 * *", "due_days": 30}
            added = post_and_retry(http, "/v1/plans", plan)
            assert added.status_code == 201 and added.json()["status"] == "A", added.text
            taken = http.post("/v1/plans", json=plan, headers={"Idempotency-Key": "second"})
            assert taken.status_code == 422 and taken.json()["type"] == BASE + "refused"
            bad = http.post("/v1/plans", json={**plan, "name": "bad", "cron": "every day at 9"},
                            headers={"Idempotency-Key": "third"})
            assert bad.status_code == 422
            assert post_and_retry(http, "/v1/plans/monthly/pause").json()["status"] == "P"
            assert post_and_retry(http, "/v1/plans/monthly/resume").json()["status"] == "A"
            ran = post_and_retry(http, "/v1/plans/monthly/run")
            assert ran.status_code == 201 and ran.json()["debits"] == 4, ran.text
            batch_id = ran.json()["batch_id"]
            batch = http.get(f"/v1/batches/{batch_id}").json()
            assert (batch["bank_code"], batch["debit_count"], batch["debits_done"]) == (DEBIT_BANK, 4, 0)
            assert batch["debits"] == {"pending": 4} and batch["chunks_done"] == 0
            assert sum(batch["amount_fen_by_state"].values()) > 0
            listed = http.get("/v1/batches").json()["items"]
            assert [b["batch"] for b in listed] == [batch_id]
            assert http.get("/v1/batches/999999").json()["type"] == BASE + "not-found"
            assert [p["name"] for p in http.get("/v1/plans").json()] == ["monthly"]
            assert http.post("/v1/plans/nosuch/run", headers={"Idempotency-Key": "n"}).status_code == 422
        with service.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(debit_batches)).scalar() == 1   # the retry made none
            assert conn.execute(select(debit_plans.c.created_by)).scalar() == "operator:op-operations"


def test_a_plan_takes_the_business_time_zone_unless_given(sqlite_url):
    engine, _ = seed(sqlite_url, 1)
    engine.dispose()
    with running_service(sqlite_url) as service, service.client(service.login(operator_name("operations"))) as http:
        plan = {"name": "p1", "bank_code": DEBIT_BANK, "cron": "0 9 5 * *"}
        assert post_and_retry(http, "/v1/plans", plan).json()["time_zone"] == service.app.state.context.settings \
            .business.timezone
        other = post_and_retry(http, "/v1/plans", {**plan, "name": "p2", "time_zone": "Europe/Berlin"})
        assert other.json()["time_zone"] == "Europe/Berlin"
        unknown = http.post("/v1/plans", json={**plan, "name": "p3", "time_zone": "Mars/Olympus"},
                            headers={"Idempotency-Key": "z"})
        assert unknown.status_code == 422 and unknown.json()["type"] == BASE + "refused"
