"""The bridges the reconciliation reports show add up, on runs with every kind of difference, built and
resolved through the real reconciliation code (bank file, statement, resolutions, manual matching), on
SQLite and PostgreSQL: bank total ± each kind = ledger total at the run, + posted + settled − reversed
= the ledger now; statement credits − debits − what is not a collection ± tolerance = collections."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from ledger.recon.finance import FinanceRules, reconcile_statement
from ledger.recon.manual import match_items
from ledger.recon.match_queries import expected_remittance
from ledger.recon.matching import reconcile_bank_file
from ledger.reports.render_csv import csv_tables
from ledger.recon.resolutions import resolve_item
from ledger.recon.run_reports import write_run_reports
from ledger.schema import payments, reversals
from ledger.synchronous_posting import post
from ledger_helpers import T0, assert_ledger_verifies, payment
from test_recon_finance import REMIT, camt, ntry
from test_recon_reports import amounts, bridge_adds_up, reports_dir, tables
from test_recon_support import BANK, DAY, world, write_bank_file  # noqa: F401 - world is a fixture


def rewritten(engine, run_id: int, directory) -> dict[str, list[dict]]:
    """A run's report written again as the run stands now, its CSV read back."""
    csv_path = next(p for p in write_run_reports(engine, run_id, reports_dir(directory)) if p.suffix == ".csv")
    return csv_tables(csv_path.read_text(encoding="utf-8-sig"))


def ledger_now(engine) -> int:
    p, r = payments.c, reversals.c
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(p.amount), 0))
                                .select_from(payments.outerjoin(reversals, r.payment_id == p.payment_id))
                                .where(p.bank_code == BANK, p.business_date == DAY, r.reversal_id.is_(None))).scalar_one())


def test_the_bank_bridge_adds_up_before_and_after_every_kind_of_resolution(world, tmp_path):
    bank_file_total = sum(int(ln.split("|")[6]) for ln in world.lines if ln.split("|")[7] == "S")
    ledger_at_run = ledger_now(world.engine)
    run = reconcile_bank_file(world.engine, write_bank_file(tmp_path, world.lines), actor="alice",
                              reports_dir=reports_dir(tmp_path / "r0"))
    bridge = tables(run)["bridge"]
    assert bridge_adds_up(bridge)
    assert amounts(bridge) == {
        "bank_total": bank_file_total, "ledger_total": ledger_at_run,
        "bank_only": -70_000,             # C7's S line (the R line moves nothing)
        "ledger_only": +60_000,           # P6
        "amount_differs": -100,           # P3: the bank took 1.00 more
        "status_differs": +40_000 - 50_000,   # P4 reversed at the bank only, P5 in the ledger only
        "debit_unknown": -90_000,         # DS: S at the bank, no payment in the ledger yet
        "resolved": 0}
    assert (bank_file_total, ledger_at_run) == (330_100, 220_000)

    items = {(i["kind"], i["bank_status"], i["ledger_status"]): i["item_id"] for i in run.items}
    actions = [(("bank_only", "S", None), "post"), (("ledger_only", None, "S"), "reverse"),
               (("status_differs", "R", "S"), "reverse"), (("debit_unknown", "S", "U"), "settle"),
               (("debit_unknown", "R", "U"), "settle"), (("amount_differs", "S", "S"), "accept")]
    for key, action in actions:
        resolve_item(world.engine, items[key], action, actor="carol", reason="per the bank's file")
    assert_ledger_verifies(world.engine)

    after = rewritten(world.engine, run.run_id, tmp_path / "r1")
    bridge = after["bridge"]
    assert bridge_adds_up(bridge)
    lines = amounts(bridge)
    assert (lines["bank_total"], lines["ledger_total"]) == (bank_file_total, ledger_at_run)   # the run's own totals
    assert lines["resolved"] == -70_000 + 60_000 + 40_000 - 90_000 - 100
    assert (lines["bank_only"], lines["ledger_only"], lines["status_differs"], lines["debit_unknown"]) == (0, 0, -50_000, 0)
    since = after["since"]
    assert bridge_adds_up(since) and "unexplained" not in amounts(since)
    assert amounts(since) == {"ledger_total": ledger_at_run, "posted": 70_000, "settled_approved": 90_000,
                              "reversed": -60_000 - 40_000, "ledger_now": ledger_now(world.engine)}
    assert ledger_now(world.engine) == 220_000 + 70_000 + 90_000 - 100_000
    differences = {r["key"]: r for r in after["differences"]}
    assert differences["total"]["net_fen"] == str(ledger_at_run - bank_file_total)
    assert int(differences["total"]["gross_fen"]) == 70_000 + 60_000 + 100 + 40_000 + 50_000 + 90_000


def test_the_finance_bridge_adds_up_with_every_kind_of_entry(world, tmp_path):
    bank_run = reconcile_bank_file(world.engine, write_bank_file(tmp_path, world.lines), actor="alice")
    cheque = payment(BANK, "C12", 120_000, method="03", cheque_no="CHQ123", at=T0 + timedelta(hours=1))
    by_hand = payment(BANK, "C2", 20_000, at=T0 + timedelta(hours=2))
    outcomes = post(world.engine, [cheque, by_hand])
    assert all(o.ok for o in outcomes), outcomes
    stmt = tmp_path / "statement.xml"
    stmt.write_bytes(camt(8, [ntry(8, REMIT + 3, ref=f"{BANK}{DAY:%Y%m%d}"),     # 0.03 over, within the tolerance
                              ntry(8, 120_000, cheque="CHQ123"),
                              ntry(8, 5_000, ref="LUMP"),                         # accepted without a match
                              ntry(8, 3_000, ref="X1"), ntry(8, 3_000, "DBIT", ref="X1", reversal=True),
                              ntry(8, 20_000, ref="HAND"),                         # matched by hand to a payment
                              ntry(8, 4_200, ref="UNKNOWN"), ntry(8, 100, "DBIT", ref="FEE")]))
    fin = reconcile_statement(world.engine, stmt, actor="fin", rules=FinanceRules(amount_tolerance_fen=5))
    entry = {i["reference"]: i["item_id"] for i in fin.items}
    resolve_item(world.engine, entry["LUMP"], "accept", actor="carol", reason="a lump sum finance booked")
    with world.engine.connect() as conn:
        pid = conn.execute(select(payments.c.payment_id).where(payments.c.rrn == by_hand.rrn)).scalar_one()
        remittance_due, _ = expected_remittance(conn, bank_run.run_id)
    match_items(world.engine, [entry["HAND"]], payment_ids=[pid], actor="erin", note="the customer's transfer")

    found = rewritten(world.engine, fin.run_id, tmp_path / "fin")
    bridge = found["bridge"]
    assert bridge_adds_up(bridge)
    credits = REMIT + 3 + 120_000 + 5_000 + 3_000 + 20_000 + 4_200
    assert amounts(bridge) == {"statement_credits": credits, "statement_debits": -3_100, "statement_net": credits - 3_100,
                               "open_credits": -4_200, "open_debits": +100, "reversal_pairs": 0, "accepted": -5_000,
                               "tolerance": -3, "collections": remittance_due + 120_000 + 20_000}
    assert remittance_due == REMIT
    with world.engine.connect() as conn:
        assert conn.execute(select(payments.c.amount).where(payments.c.rrn == cheque.rrn)).scalar_one() == 120_000
    collected = {r["key"]: int(r["amount_fen"]) for r in found["collections"]}
    assert collected == {"remittance": REMIT, "cheque": 120_000, "by_hand": 20_000, "": REMIT + 140_000}
    assert_ledger_verifies(world.engine)
