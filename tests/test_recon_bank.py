"""First reconciliation (docs/spec/INTERFACE.md §7.1): outcomes, whole-file validation, idempotence, closure, resolutions."""
from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import func, select

from ledger.synchronous_posting import post
from ledger.errors import Refused
from ledger.recon.matching import reconcile_bank_file
from ledger.reports.render_csv import csv_tables, identifier_value
from ledger.recon.resolutions import resolve_item
from ledger.recon_tables import recon_items, recon_runs
from ledger.schema import business_day_closures, debits, payments, reversals
from ledger.synchronous_posting import post
from ledger_helpers import assert_ledger_verifies, reversal
from identity_helpers import operator_env
from test_recon_support import (BANK, DAY, audit_rows, gridpay, line_of, world,  # noqa: F401 - a fixture
                                write_bank_file)


def items_by(result):
    out = {}
    for i in result.items:
        out.setdefault(i["kind"], []).append(i)
    return out


def count(engine, table, *where):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_every_outcome_is_found_and_stored(world, tmp_path):
    path = write_bank_file(tmp_path, world.lines)
    r = reconcile_bank_file(world.engine, path, actor="alice", reports_dir=tmp_path / "reports")
    assert r.status == "applied", r.message
    kinds = items_by(r)
    p = world.pays
    assert r.totals["matched_count"] == 3                       # P1, P2 (R both sides), DA
    assert r.totals["matched_sum"] == p["P1"].amount + 80_000
    assert {i["rrn"] for i in kinds["amount_differs"]} == {p["P3"].rrn}
    assert kinds["amount_differs"][0]["bank_amount"] == p["P3"].amount + 100
    sd = {i["rrn"]: (i["bank_status"], i["ledger_status"]) for i in kinds["status_differs"]}
    assert sd == {p["P4"].rrn: ("R", "S"), p["P5"].rrn: ("S", "R")}
    assert [i["rrn"] for i in kinds["ledger_only"]] == [p["P6"].rrn]
    assert {(i["rrn"], i["bank_status"]) for i in kinds["bank_only"]} == {("BANKONLY0001", "S"), ("BANKONLY0002", "R")}
    du = {i["debit_id"]: i["bank_status"] for i in kinds["debit_unknown"]}
    assert du == {world.debits["DS"]: "S", world.debits["DR"]: "R", world.debits["DX"]: None}
    assert sum(r.counts.values()) == len(r.items) == 9
    # stored: the run, its items, the closure
    with world.engine.connect() as conn:
        run = conn.execute(select(recon_runs)).one()
        assert (run.bank_code, run.business_date, run.matched_count, run.exception_count) == (BANK, DAY, 3, 9)
        assert run.bank_count == 10 and json.loads(run.details)["channels"]["D"]["matched"] == 1
        assert conn.execute(select(func.count()).select_from(recon_items)).scalar_one() == 9
        closure = conn.execute(select(business_day_closures)).one()
        assert (closure.bank_code, closure.business_date, closure.closed_by, closure.recon_run_id) == (BANK, DAY, "alice", run.run_id)
    assert audit_rows(world.engine, "recon.bank")[0].actor == "alice"
    # reports: CSV with every exception
    csv_path = next(x for x in r.reports if x.suffix == ".csv")
    exceptions = csv_tables(csv_path.read_text(encoding="utf-8-sig"))["exceptions"]
    assert sorted(int(identifier_value(row["item"])) for row in exceptions) == sorted(i["item_id"] for i in r.items)
    assert_ledger_verifies(world.engine)


@pytest.mark.parametrize("bad", ["count", "sum"])
def test_header_that_disagrees_applies_nothing(world, tmp_path, bad):
    lines = world.lines
    kw = {"count": len(lines) + 1} if bad == "count" else {"total": 12345}
    path = write_bank_file(tmp_path, lines, **kw)
    r = reconcile_bank_file(world.engine, path, actor="alice", reports_dir=tmp_path / "reports")
    assert r.status == "rejected"
    assert any(e.line == 1 and e.field == bad for e in r.bank_file.errors), r.bank_file.errors
    assert "header says" in r.message and "nothing was applied" in r.message
    assert count(world.engine, recon_runs) == 0 and count(world.engine, business_day_closures) == 0
    rejection = (tmp_path / "reports" / f"{path.name}.rejected.csv").read_text(encoding="utf-8-sig")
    assert f"1,{bad},\"header says" in rejection


def test_bad_lines_are_each_named_with_field_and_reason(world, tmp_path):
    lines = list(world.lines)
    lines[2] = lines[2].replace("|C|", "|X|")
    lines[3] = "|".join(lines[3].split("|")[:6] + ["12a"] + lines[3].split("|")[7:])
    lines.append(lines[0])                                     # duplicate channel + RRN
    path = write_bank_file(tmp_path, lines)
    r = reconcile_bank_file(world.engine, path, actor="alice")
    found = {(e.line, e.field) for e in r.bank_file.errors}
    assert {(4, "channel"), (5, "amount"), (len(lines) + 1, "rrn")} <= found
    assert count(world.engine, recon_runs) == 0


def test_same_file_twice_changes_nothing_and_says_so(world, tmp_path):
    path = write_bank_file(tmp_path, world.lines)
    first = reconcile_bank_file(world.engine, path, actor="alice")
    assert first.status == "applied"
    n_items = count(world.engine, recon_items)
    again = reconcile_bank_file(world.engine, path, actor="bob")
    assert again.status == "duplicate" and again.ok
    assert "already reconciled" in again.message and f"run {first.run_id}" in again.message
    assert count(world.engine, recon_runs) == 1 and count(world.engine, recon_items) == n_items
    # another file for the same bank and date: refused, nothing changes
    other = write_bank_file(tmp_path, world.lines[:-1], name=f"{BANK}_{DAY:%Y%m%d}_v2.txt")
    r = reconcile_bank_file(world.engine, other, actor="bob")
    assert r.status == "closed" and "already reconciled" in r.message
    assert count(world.engine, recon_runs) == 1


def test_closure_blocks_later_reversals(world, tmp_path):
    path = write_bank_file(tmp_path, world.lines)
    assert reconcile_bank_file(world.engine, path, actor="alice").status == "applied"
    out = post(world.engine, [reversal(world.pays["P1"])])[0]
    assert out.response_code == "12" and "reconciled" in out.detail
    assert count(world.engine, reversals) == 2        # only the two reversed before


def test_resolutions_go_through_the_ledger_and_are_audited(world, tmp_path):
    path = write_bank_file(tmp_path, world.lines)
    r = reconcile_bank_file(world.engine, path, actor="alice")
    kinds = items_by(r)
    engine = world.engine

    # 补账: the bank-only counter line (C7, 70,000 = its bill) is posted with source R
    bank_only = next(i for i in kinds["bank_only"] if i["bank_status"] == "S")
    done = resolve_item(engine, bank_only["item_id"], "post", actor="carol", reason="bank confirmed the payment")
    with engine.connect() as conn:
        pay = conn.execute(select(payments).where(payments.c.payment_id == done["payment_id"])).one()
    assert (pay.source, pay.rrn, pay.amount, pay.business_date, pay.customer_no) == ("R", "BANKONLY0001", 70_000, DAY, "C7")
    # the R bank-only line cannot be posted
    with pytest.raises(Refused):
        resolve_item(engine, next(i for i in kinds["bank_only"] if i["bank_status"] == "R")["item_id"], "post",
                     actor="carol", reason="x")

    # red reversal of the ledger-only payment, although the date is closed
    ledger_only = kinds["ledger_only"][0]
    done = resolve_item(engine, ledger_only["item_id"], "reverse", actor="carol", reason="bank never took it")
    with engine.connect() as conn:
        rev = conn.execute(select(reversals).where(reversals.c.reversal_id == done["reversal_id"])).one()
    assert (rev.payment_id, rev.source) == (ledger_only["payment_id"], "R")
    # the status difference the bank shows reversed: reversed in the ledger too
    p4 = next(i for i in kinds["status_differs"] if i["bank_status"] == "R")
    resolve_item(engine, p4["item_id"], "reverse", actor="carol", reason="bank reversed it")

    # debits settled by the bank's file
    du = {i["debit_id"]: i for i in kinds["debit_unknown"]}
    for name, state in (("DS", "approved"), ("DR", "reversed"), ("DX", "declined")):
        resolve_item(engine, du[world.debits[name]]["item_id"], "settle", actor="carol", reason="per bank file")
        with engine.connect() as conn:
            assert conn.execute(select(debits.c.state).where(debits.c.debit_id == world.debits[name])).scalar_one() == state
    with engine.connect() as conn:
        dpay = conn.execute(select(payments).where(payments.c.debit_id == world.debits["DS"])).one()
        assert (dpay.channel, dpay.amount, dpay.rrn) == ("D", 90_000, "DRRN00000001")
        assert conn.execute(select(payments).where(payments.c.debit_id == world.debits["DX"])).first() is None

    # accept a difference with a note
    ad = kinds["amount_differs"][0]
    resolve_item(engine, ad["item_id"], "accept", actor="carol", reason="bank fee, agreed with the bank")
    with engine.connect() as conn:
        row = conn.execute(select(recon_items).where(recon_items.c.item_id == ad["item_id"])).one()
    assert (row.status, row.resolution, row.resolved_by, row.note) == ("resolved", "accepted", "carol",
                                                                        "bank fee, agreed with the bank")
    # a resolved item cannot be resolved again; a wrong action is refused
    with pytest.raises(Refused):
        resolve_item(engine, ad["item_id"], "accept", actor="carol", reason="again")
    with pytest.raises(Refused):
        resolve_item(engine, next(i for i in kinds["status_differs"] if i["bank_status"] == "S")["item_id"], "settle",
                     actor="carol", reason="x")
    audits = audit_rows(engine, "recon.resolve")
    assert len(audits) == 7 and {a.actor for a in audits} == {"carol"}
    assert {json.loads(a.details)["step"] for a in audits} == {"post", "reverse", "settle", "accept"}
    assert_ledger_verifies(engine)


def test_settle_debits_at_reconciliation(world, tmp_path):
    path = write_bank_file(tmp_path, world.lines)
    r = reconcile_bank_file(world.engine, path, actor="alice", settle_debits=True)
    assert sorted(s["result"] for s in r.settled) == ["approved", "declined", "reversed"]
    with world.engine.connect() as conn:
        states = dict(conn.execute(select(debits.c.debit_id, debits.c.state)).all())
    assert {states[world.debits[n]] for n in ("DS", "DR", "DX")} == {"approved", "reversed", "declined"}
    assert_ledger_verifies(world.engine)


def test_bank_cli(world, tmp_path):
    path = write_bank_file(tmp_path, world.lines)
    reports = tmp_path / "reports"
    alice = operator_env(world.engine, "alice", ["clerk"])
    out = gridpay("recon", "bank", path, "--url", world.url, "--reports", reports, check=True, env=alice)
    assert "9 exception(s)" in out.stdout and "closed for reversals" in out.stdout
    phases = out.stderr.splitlines()  # progress off a terminal: one line per phase, on standard error
    assert any(re.search(r": read \d+ lines in [\d.]+ s \([\d,]+ lines/s\)$", line) for line in phases), phases
    assert any("ledger payments against" in line and "matched" in line for line in phases), phases
    assert any(re.search(r": 2 reports written in", line) for line in phases), phases
    assert sorted(p.suffix for p in reports.iterdir()) == [".csv", ".html"]
    again = gridpay("recon", "bank", path, "--url", world.url, "--reports", reports, env=alice)
    assert again.returncode == 0 and "already reconciled" in again.stdout and "nothing changed" in again.stdout
    bad = write_bank_file(tmp_path, world.lines, total=1, name=f"{BANK}_{DAY:%Y%m%d}_bad.txt")
    rejected = gridpay("recon", "bank", bad, "--url", world.url, "--reports", reports, env=alice)
    assert rejected.returncode == 1 and "  line 1, field sum: header says the S lines sum to 1 fen, they sum to 330100" in rejected.stdout
    items = json.loads(gridpay("recon", "bank", path, "--url", world.url, "--json", env=alice).stdout)
    assert items["status"] == "duplicate"
    # resolve from the command line
    with world.engine.connect() as conn:
        item_id = conn.execute(select(recon_items.c.item_id).where(recon_items.c.kind == "amount_differs")).scalar_one()
    done = gridpay("recon", "resolve", item_id, "--action", "accept", "--reason", "ok", "--url", world.url, env=alice)
    assert done.returncode == 0 and "accepted" in done.stdout
    refused = gridpay("recon", "resolve", item_id, "--reason", "again", "--url", world.url, env=alice)
    assert refused.returncode == 1 and "refused" in refused.stderr
    _ = line_of


def test_a_debit_reversed_on_both_sides_matches(world, tmp_path):
    """Our 0420 reversed a debit of unknown outcome; the bank applied it, then reversed it (line R)."""
    from ledger.debits import debit_reversed
    from ledger_helpers import T0

    assert debit_reversed(world.engine, world.debits["DR"], T0).ok
    reconcile_bank_file(world.engine, write_bank_file(tmp_path, world.lines), actor="alice")
    with world.engine.connect() as conn:
        kinds = [k for (k,) in conn.execute(select(recon_items.c.kind).where(recon_items.c.rrn == "DRRN00000002"))]
    assert kinds == []
    assert_ledger_verifies(world.engine)
