"""Approvals in a real browser on SQLite and PostgreSQL: a large refund (resident, ¥1,500 against the
¥1,000 threshold) waits for two levels; the requester (who also holds the accounting level) is
shown why they cannot decide it and a forged post of theirs is refused and audited; the accounting
approver approves; the same approver cannot approve again; the director approves and the refund is
paid; the ledger verifies."""
from __future__ import annotations

import pytest

from api_harness import T0, operator_name, running_service
from config.clock import Clock
from console_harness import Operator, in_browser, needs_chromium
from identity_helpers import ADMIN, FAST, PASSWORD, audit_rows
from ledger.identity import add_operator
from ledger.refunds import load_refund, request_refund
from ledger.synchronous_posting import post
from ledger_helpers import add_banks, add_customer, assert_ledger_verifies, payment, prepaid_of

pytestmark = needs_chromium
CUSTOMER = "C1"
ASKER = "op-asker"
ACCOUNTING, DIRECTOR = operator_name("accounting-approver"), operator_name("director-approver")


@pytest.fixture
def service(db_url):
    with running_service(db_url) as running:
        with running.engine.begin() as conn:
            add_banks(conn, "0102")
            add_customer(conn, CUSTOMER)
            add_operator(conn, T0, ADMIN, ASKER, "Asks And Approves", ["clerk", "accounting-approver"], PASSWORD, FAST)
        post(running.engine, [payment("0102", CUSTOMER, 500_000, at=T0)], Clock())
        yield running


def forged_decision(operator: Operator, refund_id: int):
    """The form's post with a valid token, for a refund the page offered no buttons for."""
    return operator.page.request.post("/console/approvals", form={
        "csrf_token": operator.csrf(), "refund_id": str(refund_id), "decision": "approve", "comment": "me"})


def approve(operator: Operator, refund_id: int, comment: str) -> str:
    row = operator.page.locator(f"#refund-{refund_id}")
    row.get_by_label("意见（驳回时必填）").fill(comment)
    row.get_by_role("button", name="批准").click()
    operator.page.wait_for_load_state()
    return operator.page.locator("[role=status]").inner_text()


def scenario(browser, service, shots, refund_id):
    asker = Operator(browser, service.base_url, shots, "asker")
    asker.sign_in(ASKER)
    asker.goto("/console/approvals")
    text = asker.page.inner_text("main")
    assert "¥1,000.00" in text and "¥10,000.00" in text and "两位不同的人" in text     # the rule shown
    assert "¥1,500.00" in asker.page.locator(f"#refund-{refund_id}").inner_text()
    assert "申请人本人不能审批" in asker.page.locator(f"#refund-{refund_id}").inner_text()
    asker.check("own-request")
    refused = forged_decision(asker, refund_id)
    assert refused.status == 403 and "申请人本人不能审批" in refused.text()

    accounting = Operator(browser, service.base_url, shots, "accounting")
    accounting.sign_in(ACCOUNTING)
    accounting.goto("/console/approvals")
    accounting.check("waiting")
    assert "已批准（财务中心级）。状态：待审批" in approve(accounting, refund_id, "checked the transfer")
    assert "已审批" in accounting.page.locator(f"#refund-{refund_id}").inner_text()
    accounting.check("approved-once")
    again = forged_decision(accounting, refund_id)
    assert again.status == 403 and "此级别已审批" in again.text()

    director = Operator(browser, service.base_url, shots, "director")
    director.sign_in(DIRECTOR)
    director.goto("/console/approvals")
    unexplained = director.page.request.post("/console/approvals", form={
        "csrf_token": director.csrf(), "refund_id": str(refund_id), "decision": "reject", "comment": " "})
    assert unexplained.status == 422 and "驳回时需填写意见" in unexplained.text()      # a rejection gives its reason
    assert "已批准（部门主管级）。状态：已退款" in approve(director, refund_id, "agreed")
    assert director.page.locator(f"#refund-{refund_id}").count() == 0      # no longer waiting
    director.check("paid")


def test_two_approvers_pay_a_large_refund_and_the_requester_cannot(service, tmp_path):
    refund = request_refund(service.engine, CUSTOMER, 150_000, actor=f"operator:{ASKER}", reason="moving away",
                            now=T0)
    assert refund.needs_approval and refund.status == "pending"
    in_browser(scenario, service, tmp_path, refund.refund_id)

    with service.engine.connect() as conn:
        paid = load_refund(conn, refund.refund_id)
        assert prepaid_of(conn, CUSTOMER) == 500_000 - 150_000
    assert paid.status == "paid"
    assert [(d.level, d.decided_by, d.note) for d in paid.decisions] == [
        ("accounting", f"operator:{ACCOUNTING}", "checked the transfer"), ("director", f"operator:{DIRECTOR}", "agreed")]
    refusals = audit_rows(service.engine, "refund.decide.refused")
    assert [(r["actor"], r["reason"]) for r in refusals] == [(f"operator:{ASKER}", "own_request"),
                                                             (f"operator:{ACCOUNTING}", "already_approved")]
    assert [r["actor"] for r in audit_rows(service.engine, "refund.approve")] == [
        f"operator:{ACCOUNTING}", f"operator:{DIRECTOR}"]
    assert len(list(tmp_path.glob("*.png"))) == 4
    assert_ledger_verifies(service.engine)
