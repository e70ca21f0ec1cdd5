"""The day at a glance, debit plans and batches, and the finance reports in a real browser (SQLite
and PostgreSQL).

Operations signs in and lands on the glance: the bank's link signed on with its engine, today's
counter collection, nothing waiting. They add a plan (a bad schedule is refused first), run it
now (a second press of the same form answers the same batch), pause it; the glance shows the batch running, and its progress moves as
the batch's debits get their outcomes (written by the ledger's own debit functions, as an engine
does) while the page refreshes itself. The auditor sees the plans and batches without a button,
and a forged post of theirs is refused (403) and audited. Finance opens every report (its table,
and its chart where it has one) and downloads it as CSV (leading zeros kept) and XLSX (opened by
openpyxl). Every page: a screenshot that is not blank, axe's rules, the CSP. The ledger verifies."""
from __future__ import annotations

import csv
import io
import re

import openpyxl
import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from api_harness import T0, operator_name, running_service
from config.clock import Clock, ManualClock
from console_harness import Operator, in_browser, needs_chromium
from engines.plans import list_plans
from engines.store import register_instance
from identity_helpers import audit_rows
from ledger.debits import debit_approved, debit_declined, mark_debit_sent
from ledger.key_store import KeyState
from ledger.key_store_db import DbKeyBackend
from ledger.schema import debit_batches, debits
from ledger.synchronous_posting import post
from ledger_helpers import assert_ledger_verifies, payment
from test_engine_support import BANK, ZMK, make_settings, seed

pytestmark = needs_chromium
OPERATIONS, AUDITOR, FINANCE = operator_name("operations"), operator_name("auditor"), operator_name("finance")
PLAN = "monthly-0102"
CUSTOMERS = 6
TODAY = Clock().business_date(T0)
CHARTED = ("confirmed", "daily", "monthly", "month-end", "aging", "receivables")   # arrears, debits: no chart
REPORTS = ("confirmed", "daily", "monthly", "month-end", "aging", "arrears", "receivables", "debits")


@pytest.fixture
def service(db_url):
    engine, numbers = seed(db_url, CUSTOMERS + 1)     # the last one pays at the counter today
    DbKeyBackend(engine, lambda bank: ZMK, ManualClock(T0)).save(BANK, "debit", KeyState(bytes(range(16)), version=1))
    register_instance(engine, name="e1", banks=[BANK], now=T0, lease_s=3600)
    post(engine, [payment(BANK, numbers[-1], 10_050, at=T0)], ManualClock(T0))      # today's counter collection
    with running_service(db_url, settings=make_settings(db_url)) as running:
        yield running
    engine.dispose()


def batch_row(operator: Operator, batch_id: int) -> str:
    return operator.page.locator(f"#batch-{batch_id} .done-count").inner_text()


def outcomes_arrive(engine, batch_id: int, count: int) -> None:
    """What an engine does with the first ``count`` debits: sent, then the bank's answer."""
    with engine.connect() as conn:
        ids = conn.execute(select(debits.c.debit_id).where(debits.c.batch_id == batch_id)
                           .order_by(debits.c.debit_id).limit(count)).scalars().all()
    for n, debit_id in enumerate(ids):
        with engine.begin() as conn:
            mark_debit_sent(conn, debit_id, transmitted=T0.strftime("%m%d%H%M%S"), stan=f"{n + 1:06d}",
                            rrn=f"{n + 1:012d}", business_date=TODAY, at=T0)
        if n == 0:
            debit_declined(engine, debit_id, T0, "51")
        else:
            debit_approved(engine, debit_id, T0)


def operations_scenario(browser, service, shots) -> int:
    ops = Operator(browser, service.base_url, shots, "operations")
    ops.sign_in(OPERATIONS)
    link = ops.page.locator(f"#link-{BANK}-debit").inner_text()
    assert "是" in link and "e1" in link, link                     # signed on, served by engine e1
    assert "¥100.50" in ops.page.locator("#collections").inner_text()
    assert ops.page.locator("h1").inner_text() == "今日概览"
    ops.check("glance-quiet")

    ops.goto("/console/plans")
    ops.page.get_by_label(re.compile("^名称")).fill(PLAN)
    ops.page.get_by_label("银行").select_option(BANK)
    ops.page.get_by_label(re.compile("^执行时间")).fill("61 9 5 * *")
    ops.page.get_by_role("button", name="新建计划").click()
    ops.page.wait_for_load_state()
    assert "not a cron expression" in ops.page.locator("#refused").inner_text()     # refused, nothing made
    assert ops.page.get_by_label(re.compile("^名称")).input_value() == PLAN           # the form kept
    ops.page.get_by_label(re.compile("^执行时间")).fill("0 9 5 * *")
    ops.page.get_by_role("button", name="新建计划").click()
    ops.page.wait_for_load_state()
    assert f"计划 {PLAN}：启用" in ops.page.locator("#done").inner_text()
    ops.check("plan-added")

    run_form = ops.page.locator(f"#plan-{PLAN} form[action$='/run']")
    key = run_form.locator("input[name=idempotency_key]").get_attribute("value")
    ops.page.get_by_role("button", name=f"立即执行 {PLAN}").click()
    ops.page.wait_for_load_state()
    ran = ops.page.locator("#done").inner_text()
    batch_id = int(re.search(r"批次 (\d+)，6 笔", ran).group(1))
    again = ops.page.request.post(f"/console/plans/{PLAN}/run", form={"csrf_token": ops.csrf(), "idempotency_key": key})
    assert again.status == 200 and f"批次 {batch_id}，6 笔" in again.text()     # the same batch, not another
    assert batch_row(ops, batch_id).startswith("0/6")
    ops.check("plan-ran")

    ops.page.get_by_role("button", name=f"暂停 {PLAN}").click()
    ops.page.wait_for_load_state()
    assert ops.page.locator(f"#plan-{PLAN} .plan-status").inner_text() == "已暂停"
    assert ops.page.get_by_role("button", name=f"恢复 {PLAN}").count() == 1
    ops.check("plan-paused")

    ops.goto("/console/glance")
    assert batch_row(ops, batch_id).startswith("0/6")     # checked once it moved: a screenshot marks the page
    outcomes_arrive(service.engine, batch_id, 3)
    # the page fetches its figures again by itself (console.js); the browser waits for them
    expect(ops.page.locator(f"#batch-{batch_id} .done-count")).to_have_text(re.compile("^3/6"), timeout=60_000)
    assert "扣款成功 2, 银行拒绝 1, 待发送 3" in ops.page.locator(f"#batch-{batch_id}").inner_text()   # the page's words
    ops.check("glance-progress")

    ops.goto("/console/plans")
    assert "3/6" in ops.page.locator(f"#bank-{BANK}").inner_text()
    ops.check("batches-progress")
    ops.goto("/console/glance?lang=en")                   # every label has its English
    assert ops.page.locator("h1").inner_text() == "The day at a glance"
    assert "3 of 6 debits answered" in ops.page.locator(f"#batch-{batch_id}").inner_text()
    assert "approved 2, declined 1, pending 3" in ops.page.locator(f"#batch-{batch_id}").inner_text()
    ops.goto("/console/plans?lang=en")
    assert ops.page.locator(f"#plan-{PLAN} .plan-status").inner_text() == "paused"
    return batch_id


def auditor_scenario(browser, service, shots, batch_id: int):
    auditor = Operator(browser, service.base_url, shots, "auditor")
    auditor.sign_in(AUDITOR)
    auditor.goto("/console/plans")
    assert PLAN in auditor.page.locator("#plans").inner_text()
    assert batch_row(auditor, batch_id).startswith("3/6")
    assert auditor.page.locator("main form").count() == 0 and auditor.page.locator("main button").count() == 0
    auditor.check("plans-read-only")
    forged = auditor.page.request.post(f"/console/plans/{PLAN}/run", form={"csrf_token": auditor.csrf(),
                                                                           "idempotency_key": "forged"})
    assert forged.status == 403 and "plan.manage" in forged.text()


def finance_scenario(browser, service, shots, downloads):
    finance = Operator(browser, service.base_url, shots, "finance")
    finance.sign_in(FINANCE)
    assert finance.page.locator("h1").inner_text() == "今日概览"
    finance.goto("/console/reports")
    finance.check("reports")
    for name in REPORTS:
        finance.goto("/console/reports")
        form = finance.page.locator(f"#form-{name}")
        form.get_by_role("button", name="打开").click()
        finance.page.wait_for_load_state()
        assert finance.page.url.split("?")[0].endswith(f"/console/reports/{name}")
        assert finance.page.locator("table").count() >= 1
        assert (finance.page.locator("figure#chart svg rect").count() > 0) == (name in CHARTED), name
        finance.check(f"report-{name}")
        for fmt in ("csv", "xlsx"):
            finance.goto("/console/reports")
            form = finance.page.locator(f"#form-{name}")
            form.locator("select[name=format]").select_option(fmt)
            with finance.page.expect_download() as download:
                form.get_by_role("button", name="打开").click()
            saved = downloads / f"{name}.{fmt}"
            download.value.save_as(saved)
            assert download.value.suggested_filename.endswith(f".{fmt}")
    page = finance.page.request.get(f"/console/reports/daily?date={TODAY}&format=html")
    policy = page.headers["content-security-policy"]       # the report's own: its style sheet by hash, no script
    assert policy.startswith("default-src 'none'; style-src 'sha256-") and "script-src" not in policy
    assert "unsafe" not in policy and page.headers["x-frame-options"] == "DENY"
    finance.goto("/console/reports?lang=en")
    assert finance.page.locator("h1").inner_text() == "Finance reports"
    assert finance.page.get_by_label("At least days overdue (optional)").input_value() == "1"


def test_operations_finance_and_the_auditor_in_the_console(service, tmp_path):
    shots, downloads = tmp_path / "shots", tmp_path / "downloads"
    shots.mkdir()
    downloads.mkdir()
    batch_id = in_browser(operations_scenario, service, shots)
    in_browser(auditor_scenario, service, shots, batch_id)
    in_browser(finance_scenario, service, shots, downloads)

    with service.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(debit_batches)).scalar_one() == 1
        states = dict(conn.execute(select(debits.c.state, func.count()).group_by(debits.c.state)).all())
    assert states == {"approved": 2, "declined": 1, "pending": 3}
    plan = next(p for p in list_plans(service.engine) if p["name"] == PLAN)
    assert plan["status"] == "P" and plan["created_by"] == f"operator:{OPERATIONS}"
    assert [(r["action"], r["actor"]) for r in audit_rows(service.engine) if r["action"].startswith("plan.")] == [
        ("plan.add", f"operator:{OPERATIONS}"), ("plan.pause", f"operator:{OPERATIONS}")]
    assert [r["actor"] for r in audit_rows(service.engine, "debit.batch")] == [f"operator:{OPERATIONS}"]
    refused = audit_rows(service.engine, "access.forbidden")
    assert [(r["actor"], r["details"].get("permission")) for r in refused] == [(f"operator:{AUDITOR}", "plan.manage")]

    daily = list(csv.reader(io.StringIO((downloads / "daily.csv").read_text(encoding="utf-8-sig"))))
    assert [row[0] for row in daily if row and "现金" in row] == [f'="{BANK}"']   # text: its leading zero kept
    arrears = list(csv.reader(io.StringIO((downloads / "arrears.csv").read_text(encoding="utf-8-sig"))))
    assert '="C00000001"' in [row[0] for row in arrears if row]          # customer numbers as text
    by_channel = list(csv.reader(io.StringIO((downloads / "debits.csv").read_text(encoding="utf-8-sig"))))
    assert sum(int(row[4]) for row in by_channel if row[2:3] == ["批量代扣"]) == 6      # the batch's six debits
    for name in REPORTS:
        book = openpyxl.load_workbook(downloads / f"{name}.xlsx", read_only=True)
        assert book.sheetnames and next(book.worksheets[0].iter_rows(values_only=True))
        book.close()
    assert len(list(shots.glob("*.png"))) == 6 + 1 + 1 + len(REPORTS)
    assert_ledger_verifies(service.engine)
