"""The reconciliation workbench in a real browser, on SQLite and PostgreSQL.

A bank day file lands in the drop directory's incoming/ (written under a temporary name, then
renamed, as a file transfer agent does). A clerk sees it listed and presses start: the run's page
shows the bridge, what matched automatically and what is open. The bank shows one line of ¥450.00
for customer C3 where the ledger has two payments (¥300.00 and ¥150.00): with the keys (j, Space,
Enter) the clerk matches the bank's line to the two ledger items, many to one; undoes it (u, a
reason, Enter); matches it again with the mouse; and resolves the amount that differs (r, a
reason, Enter). The ledger (recon_matches, ``gridpay ledger verify``) and the audit log show each
action by the clerk. A finance operator (recon.read without recon.match) sees the open item with
no tick boxes and no buttons, and a forged post of theirs is refused (403, audited)."""
from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from api_harness import operator_name, running_service
from config.settings import Settings
from console_harness import Operator, in_browser, needs_chromium
from identity_helpers import audit_rows
from ledger.recon_tables import recon_items, recon_match_members, recon_matches
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, add_customer, assert_ledger_verifies, payment
from test_recon_support import BANK, DAY, gridpay, line_of, write_bank_file

pytestmark = needs_chromium
CLERK, FINANCE = operator_name("clerk"), operator_name("finance")
FILE = f"{BANK}_{DAY:%Y%m%d}.txt"


@pytest.fixture
def service(db_url, tmp_path):
    with running_service(db_url, settings=Settings(drop_dir=str(tmp_path / "drop"))) as running:
        with running.engine.begin() as conn:
            add_banks(conn, BANK)
            for customer in ("C1", "C2", "C3", "C5", "C6"):
                add_customer(conn, customer)
        running.pays = {name: payment(BANK, customer, amount, at=T0 + timedelta(minutes=n))
                        for n, (name, customer, amount) in enumerate((
                            ("P1", "C1", 10_000), ("P2", "C2", 20_000), ("P3", "C3", 30_000),
                            ("P4", "C3", 15_000), ("P5", "C5", 50_000), ("P6", "C6", 60_000)))}
        assert [o.response_code for o in post(running.engine, list(running.pays.values()))] == ["00"] * 6
        running.url = db_url
        yield running


def drop_bank_file(service, tmp_path) -> None:
    """P1, P2 as in the ledger; one line of ¥450.00 for C3 (the ledger: P3 + P4); P5 ¥1 more; P6 under
    another RRN (left open: a bank-only line and a ledger-only payment)."""
    p = service.pays
    lines = [line_of(p["P1"]), line_of(p["P2"]), "D|C|20261123101500|777001|BANKONLY0001|C3|45000|S|T0000009",
             line_of(p["P5"], amount=50_100), "D|C|20261123101600|777002|TYPO00000006|C6|60000|S|T0000009"]
    written = write_bank_file(tmp_path, lines)
    incoming = tmp_path / "drop" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / f".{FILE}.part").write_bytes(written.read_bytes())
    os.replace(incoming / f".{FILE}.part", incoming / FILE)


def items_by_kind(engine) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with engine.connect() as conn:
        for kind, item_id in conn.execute(select(recon_items.c.kind, recon_items.c.item_id).order_by(recon_items.c.item_id)):
            out.setdefault(kind, []).append(item_id)
    return out


def press(operator: Operator, *keys: str) -> None:
    for key in keys:
        operator.page.keyboard.press(key)


def clerk_scenario(browser, service, shots):
    clerk = Operator(browser, service.base_url, shots, "clerk")
    page = clerk.sign_in(CLERK)
    assert "对账工作台" in page.get_by_role("navigation").inner_text()
    clerk.goto("/console/recon")
    assert FILE in page.inner_text("main") and "银行交易文件" in page.inner_text("main")
    clerk.check("workbench")
    page.get_by_role("button", name=f"开始对账 {FILE}").click()
    page.wait_for_load_state()
    text = page.inner_text("main")
    assert "对账已完成" in text and "调节相符" in text
    assert "¥1,851.00" in page.locator("#bridge").inner_text() and "¥1,850.00" in page.locator("#bridge").inner_text()
    assert "¥300.00" in page.locator("#matched-heading + table").inner_text()       # P1 + P2, matched automatically
    assert page.locator("#open-items [data-row]").count() == 6
    clerk.check("run")
    kinds = items_by_kind(service.engine)
    (bank_only, typo), (p3, p4, p6), differs = kinds["bank_only"], kinds["ledger_only"], kinds["amount_differs"][0]

    # the keys: j j to the bank's line (the run lists amount_differs, bank_only, ledger_only...), Enter opens it
    press(clerk, "j", "j", "Enter")
    page.wait_for_url(re.compile(f"/console/recon/items/{bank_only}$"))
    assert page.locator("#candidates [data-row]").nth(0).get_attribute("id") == f"candidate-item-{p3}"
    assert page.locator("#candidates [data-row]").nth(1).get_attribute("id") == f"candidate-item-{p4}"
    side_by_side = page.locator(f"#candidate-item-{p3}").inner_text()
    assert all(word in side_by_side for word in ("2026-11-23", "¥300.00", "C3", BANK, "日期相同，户号相同")), side_by_side
    clerk.check("item")
    press(clerk, "j", "Space", "j", "Space", "Enter")                  # tick both ledger items, match: many to one
    page.wait_for_url(re.compile(r"done=matched"))
    assert "已匹配" in page.locator("[role=status]").inner_text()
    clerk.check("matched")
    press(clerk, "u")
    page.keyboard.type("wrong pair")
    press(clerk, "Enter")
    page.wait_for_url(re.compile(r"done=undone"))
    assert page.locator("#item-status").inner_text() == "待处理"
    clerk.check("undone")
    page.get_by_label(f"选择 对账项 {p3}").check()               # again, with the mouse
    page.get_by_label(f"选择 对账项 {p4}").check()
    page.get_by_label("匹配说明（可选）").fill("one line for two payments")
    page.get_by_role("button", name="匹配所选").click()
    page.wait_for_url(re.compile(r"done=matched"))
    assert "one line for two payments" in page.locator("#item-match").inner_text()

    press(clerk, "n")                                           # the next open item: the amount that differs
    page.wait_for_url(re.compile(f"/console/recon/items/{differs}$"))
    press(clerk, "r")
    page.keyboard.type("bank fee")
    press(clerk, "Enter")
    page.wait_for_url(re.compile(r"done=resolved"))
    assert "差异已接受" in page.inner_text("main")
    clerk.check("resolved")
    clerk.goto(f"/console/recon/runs/{item_run(service.engine, p6)}")
    assert page.locator("#open-items [data-row]").count() == 2 and "调节相符" in page.inner_text("main")
    clerk.check("run-after")
    clerk.goto(f"/console/recon/runs/{item_run(service.engine, p6)}?lang=en")
    assert "Reconciliation run" in page.inner_text("h1") and "the bridge adds up" in page.inner_text("main").lower()
    clerk.check("run-english")
    return (bank_only, typo), (p3, p4, p6), differs


def finance_scenario(browser, service, shots, open_item, other):
    finance = Operator(browser, service.base_url, shots, "finance")
    page = finance.sign_in(FINANCE)
    finance.goto(f"/console/recon/items/{open_item}")
    assert "不能手工匹配" in page.inner_text("main")
    assert page.locator("#candidate-item-%d" % other).count() == 1        # the candidates, side by side
    assert page.locator("main form").count() == 0 and page.locator("input[type=checkbox]").count() == 0
    finance.check("item-read-only")
    forged = page.request.post(f"/console/recon/items/{open_item}/match", form={
        "csrf_token": finance.csrf(), "pick": f"item:{other}", "idempotency_key": "forged"})
    assert forged.status == 403 and "recon.match" in forged.text()


def test_a_clerk_reconciles_a_dropped_bank_file_and_matches_by_hand(service, tmp_path):
    drop_bank_file(service, tmp_path)
    shots = tmp_path / "shots"
    shots.mkdir()
    (bank_only, typo), (p3, p4, p6), differs = in_browser(clerk_scenario, service, shots)
    in_browser(finance_scenario, service, shots, p6, typo)

    incoming, processed = tmp_path / "drop" / "incoming", tmp_path / "drop" / "processed"
    assert not any(incoming.iterdir()) and (processed / FILE).exists()
    with service.engine.connect() as conn:
        matches = conn.execute(select(recon_matches).order_by(recon_matches.c.match_id)).all()
        members = set(conn.execute(select(recon_match_members.c.item_id)
                                   .where(recon_match_members.c.match_id == matches[-1].match_id)).scalars())
        status = dict(conn.execute(select(recon_items.c.item_id, recon_items.c.status)).all())
    clerk = f"operator:{CLERK}"
    assert [(m.kind, m.created_by, m.undone_by) for m in matches] == [("manual", clerk, clerk), ("manual", clerk, None)]
    assert members == {bank_only, p3, p4} and matches[-1].note == "one line for two payments"
    assert (status[bank_only], status[p3], status[p4], status[differs], status[p6], status[typo]) == (
        "matched", "matched", "matched", "resolved", "open", "open")
    assert [r["actor"] for r in audit_rows(service.engine, "recon.bank")] == [clerk]
    assert [(r["actor"], r["details"]["outcome"]) for r in audit_rows(service.engine, "recon.start")] == [
        (clerk, "processed")]
    assert [r["actor"] for r in audit_rows(service.engine, "recon.match")] == [clerk, clerk]
    assert [(r["actor"], r["reason"]) for r in audit_rows(service.engine, "recon.unmatch")] == [(clerk, "wrong pair")]
    assert [(r["actor"], r["reason"], r["object_id"]) for r in audit_rows(service.engine, "recon.resolve")] == [
        (clerk, "bank fee", str(differs))]
    assert [(r["actor"], r["details"]["permission"]) for r in audit_rows(service.engine, "access.forbidden")] == [
        (f"operator:{FINANCE}", "recon.match")]
    assert len(list(shots.glob("*.png"))) == 9
    assert_ledger_verifies(service.engine)
    gridpay("ledger", "verify", "--url", service.url, check=True)


def item_run(engine, item_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(select(recon_items.c.run_id).where(recon_items.c.item_id == item_id)).scalar_one()


STATEMENT = "statement.csv"
BAD = f"{BANK}_20261124.txt"
NO_SUCH_DAY = f"{BANK}_20261399.txt"


def drop(directory, name: str, data: bytes) -> None:
    (directory / f".{name}.part").write_bytes(data)
    os.replace(directory / f".{name}.part", directory / name)


def start_scenario(browser, service, shots):
    finance = Operator(browser, service.base_url, shots, "finance")
    page = finance.sign_in(FINANCE)
    finance.goto("/console/recon")
    text = page.inner_text("main")
    assert STATEMENT in text and BAD in text and "不能对此类文件对账（recon.run）" in text
    assert NO_SUCH_DAY in text                  # listed (the reconciliation says what is wrong with it)
    assert page.get_by_role("button", name=f"开始对账 {BAD}").count() == 0
    finance.check("files")
    forged = page.request.post("/console/recon/start", form={"csrf_token": finance.csrf(), "file": BAD})
    assert forged.status == 403 and "recon.run" in forged.text()
    page.get_by_role("button", name=f"开始对账 {STATEMENT}").click()
    page.wait_for_url(re.compile(r"/console/recon/runs/\d+\?done=started"))
    assert "财务对账单" in page.inner_text("main") and "¥5.00" in page.locator("#bridge").inner_text()
    assert page.locator("#open-items [data-row]").count() == 1
    finance.check("statement-run")

    credit = page.locator("#open-items a").first.inner_text()

    clerk = Operator(browser, service.base_url, shots, "clerk", javascript=False)      # plain forms only
    page = clerk.sign_in(CLERK)
    clerk.goto("/console/recon")
    page.get_by_role("button", name=f"开始对账 {BAD}").click()
    page.wait_for_load_state()
    assert "已拒收" in page.locator("[role=alert]").inner_text()
    assert BAD not in page.locator("main table").first.inner_text()      # no longer waiting
    # (no check(): axe-core and the inline-script probe are scripts, and this browser runs none; the
    # pages are checked with scripts on above and in the first test)
    clerk.goto(f"/console/recon/items/{credit}")
    page.get_by_label("处理原因").fill("a refund from the bank, not a collection")
    page.get_by_role("button", name="处理").click()
    page.wait_for_url(re.compile(r"done=resolved"))
    assert "差异已接受" in page.inner_text("main")


def test_each_kind_starts_with_its_permission_and_a_bad_file_is_set_aside(sqlite_url, tmp_path):
    with running_service(sqlite_url, settings=Settings(drop_dir=str(tmp_path / "drop"))) as service:
        with service.engine.begin() as conn:
            add_banks(conn, BANK)
        incoming = tmp_path / "drop" / "incoming"
        incoming.mkdir(parents=True)
        drop(incoming, STATEMENT, b"booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty\n"
                                  b"2026-11-24,,500,C,,,SOMETHING,x\n")
        bad = write_bank_file(tmp_path, ["D|C|20261124101500|777001|BANKONLY0001|C3|45000|S|T0000009"],
                              day=DAY + timedelta(days=1), total=1)
        drop(incoming, BAD, bad.read_bytes())
        drop(incoming, NO_SUCH_DAY, bad.read_bytes())
        shots = tmp_path / "shots"
        shots.mkdir()
        in_browser(start_scenario, service, shots)

        assert (tmp_path / "drop" / "rejected" / BAD).exists() and (tmp_path / "drop" / "processed" / STATEMENT).exists()
        assert [(r["actor"], r["object_id"], r["details"]["outcome"]) for r in audit_rows(service.engine, "recon.start")] == [
            (f"operator:{FINANCE}", STATEMENT, "processed"), (f"operator:{CLERK}", BAD, "rejected")]
        assert [r["actor"] for r in audit_rows(service.engine, "recon.finance")] == [f"operator:{FINANCE}"]
        assert [(r["actor"], r["details"]["permission"]) for r in audit_rows(service.engine, "access.forbidden")] == [
            (f"operator:{FINANCE}", "recon.run")]
        assert [(r["actor"], r["reason"]) for r in audit_rows(service.engine, "recon.resolve")] == [
            (f"operator:{CLERK}", "a refund from the bank, not a collection")]
        assert len(list(shots.glob("*.png"))) == 2
