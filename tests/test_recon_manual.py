"""Manual matching: open, show (ranked candidates), match one-to-one and many-to-one, unmatch, resolve;
every action audited with the operator's name."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from ledger.recon.finance import reconcile_statement
from ledger.errors import Refused
from ledger.recon.manual import match_items, open_items, show_item, unmatch
from ledger.recon.matching import reconcile_bank_file
from ledger.recon.resolutions import resolve_item
from ledger.recon_tables import recon_items, recon_matches
from ledger_helpers import assert_ledger_verifies
from gridpay.operator_auth import os_login
from identity_helpers import operator_env
from test_recon_support import BANK, DAY, audit_rows, build_world, gridpay, write_bank_file


@pytest.fixture
def world(db_url, tmp_path):
    w = build_world(db_url)
    # P6 appears at the bank under a mistyped RRN: one bank-only line, one ledger-only payment
    p6 = w.pays["P6"]
    lines = [ln for ln in w.lines] + [f"D|C|{DAY.year}{p6.transmitted}|{p6.stan}|TYPO{p6.rrn[4:]}|{p6.customer_no}|{p6.amount}|S|T1"]
    r = reconcile_bank_file(w.engine, write_bank_file(tmp_path, lines), actor="alice")
    assert r.status == "applied"
    w.run = r
    yield w
    w.engine.dispose()


def item(w, kind, **kw):
    return next(i for i in w.run.items if i["kind"] == kind and all(i[k] == v for k, v in kw.items()))


def status(engine, item_id):
    with engine.connect() as conn:
        return conn.execute(select(recon_items.c.status).where(recon_items.c.item_id == item_id)).scalar_one()


def test_open_lists_by_bank_and_date(world):
    items = open_items(world.engine, bank=BANK, business_date=DAY)
    assert len(items) == len(world.run.items) == 10
    assert {i["kind"] for i in open_items(world.engine, kind="ledger_only")} == {"ledger_only"}
    assert open_items(world.engine, bank="999") == []


def test_show_ranks_candidates_and_one_to_one_match_and_unmatch(world):
    p6 = world.pays["P6"]
    typo = item(world, "bank_only", rrn=f"TYPO{p6.rrn[4:]}")
    ledger_only = item(world, "ledger_only")
    shown = show_item(world.engine, typo["item_id"])
    best = shown["candidates"][0]
    assert (best["type"], best["id"]) == ("item", ledger_only["item_id"])
    assert "same amount" in best["why"] and "same customer" in best["why"] and "same date" in best["why"]
    match_id = match_items(world.engine, [typo["item_id"], ledger_only["item_id"]], actor="erin", note="RRN typo at the bank")
    assert status(world.engine, typo["item_id"]) == status(world.engine, ledger_only["item_id"]) == "matched"
    assert show_item(world.engine, typo["item_id"])["match"]["match_id"] == match_id
    with pytest.raises(Refused):   # already matched
        match_items(world.engine, [typo["item_id"], ledger_only["item_id"]], actor="erin")
    assert sorted(unmatch(world.engine, match_id, actor="frank", reason="wrong pair")) == sorted([typo["item_id"], ledger_only["item_id"]])
    assert status(world.engine, typo["item_id"]) == "open"
    with pytest.raises(Refused):
        unmatch(world.engine, match_id, actor="frank", reason="again")
    with world.engine.connect() as conn:
        m = conn.execute(select(recon_matches).where(recon_matches.c.match_id == match_id)).one()
    assert (m.kind, m.created_by, m.undone_by) == ("manual", "erin", "frank")
    (audit_match,), (audit_unmatch,) = audit_rows(world.engine, "recon.match"), audit_rows(world.engine, "recon.unmatch")
    assert (audit_match.actor, audit_match.reason) == ("erin", "RRN typo at the bank")
    assert (audit_unmatch.actor, audit_unmatch.reason) == ("frank", "wrong pair")


def test_sides_must_agree(world):
    typo = item(world, "bank_only", rrn=f"TYPO{world.pays['P6'].rrn[4:]}")
    other = item(world, "status_differs", bank_status="S")
    with pytest.raises(Refused, match="must agree"):
        match_items(world.engine, [typo["item_id"]], payment_ids=[world.run.items[0]["payment_id"] or 1], actor="erin")
    with pytest.raises(Refused, match="at least two sides"):
        match_items(world.engine, [other["item_id"]], actor="erin")


def test_many_to_one_statement_credit_to_payments(world, tmp_path):
    """One finance credit paying for two ledger payments, matched by hand."""
    p1, p3 = world.pays["P1"], world.pays["P3"]
    with world.engine.connect() as conn:
        from ledger.schema import payments
        ids = dict(conn.execute(select(payments.c.rrn, payments.c.payment_id)).all())
    path = tmp_path / "s.csv"
    path.write_text("booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty\n"
                    f"2026-11-23,2026-11-23,{p1.amount + p3.amount},C,,,LUMP,C1 and C3\n", encoding="utf-8")
    r = reconcile_statement(world.engine, path, actor="fin")
    credit = r.items[0]
    assert credit["status"] == "open"
    cands = show_item(world.engine, credit["item_id"])["candidates"]
    same = next(c for c in cands if c["type"] == "payment")     # P4 happens to have the credit's amount
    assert same["id"] == ids[world.pays["P4"].rrn] and "same amount" in same["why"]
    match_id = match_items(world.engine, [credit["item_id"]], payment_ids=[ids[p1.rrn], ids[p3.rrn]], actor="erin",
                           note="one transfer for two bills")
    assert status(world.engine, credit["item_id"]) == "matched"
    with pytest.raises(Refused, match="not open"):
        match_items(world.engine, [credit["item_id"]], payment_ids=[ids[p1.rrn]], actor="erin")
    unmatch(world.engine, match_id, actor="erin", reason="check again")
    assert status(world.engine, credit["item_id"]) == "open"


def test_resolve_with_reason_is_audited(world):
    ad = item(world, "amount_differs")
    resolve_item(world.engine, ad["item_id"], "accept", actor="gina", reason="bank charged a fee")
    (row,) = audit_rows(world.engine, "recon.resolve")
    assert (row.actor, row.reason, row.object_id) == ("gina", "bank charged a fee", str(ad["item_id"]))
    assert json.loads(row.details)["step"] == "accept"
    with pytest.raises(Refused, match="reason"):
        resolve_item(world.engine, item(world, "ledger_only")["item_id"], "accept", actor="gina", reason="")
    assert_ledger_verifies(world.engine)


def test_manual_cli(world):
    url = world.url
    out = gridpay("recon", "open", "--bank", BANK, "--date", str(DAY), "--url", url, check=True)
    assert "10 open item(s)" in out.stdout and f"bank {BANK}" in out.stdout
    p6 = world.pays["P6"]
    typo = item(world, "bank_only", rrn=f"TYPO{p6.rrn[4:]}")
    ledger_only = item(world, "ledger_only")
    shown = gridpay("recon", "show", typo["item_id"], "--url", url, check=True)
    assert "candidates:" in shown.stdout and "same amount" in shown.stdout
    hal = operator_env(world.engine, "hal", ["clerk"])
    matched = gridpay("recon", "match", typo["item_id"], ledger_only["item_id"], "--note", "typo",
                      "--url", url, check=True, env=hal)
    assert "matched" in matched.stdout
    undone = gridpay("recon", "unmatch", "--item", typo["item_id"], "--reason", "oops", "--url", url, check=True,
                     env=hal)
    assert "open again" in undone.stdout
    resolved = gridpay("recon", "resolve", ledger_only["item_id"], "--action", "reverse", "--reason", "never at the bank",
                       "--url", url, check=True, env=hal)
    assert "reversed" in resolved.stdout and "reversal_id" in resolved.stdout
    done = (audit_rows(world.engine, "recon.match") + audit_rows(world.engine, "recon.unmatch")
            + audit_rows(world.engine, "recon.resolve"))
    assert {(a.actor, json.loads(a.details)["os_login"]) for a in done} == {("operator:hal", os_login())}
    assert_ledger_verifies(world.engine)
