"""The console in a real browser (Debian's chromium, Playwright) against the real API service:
sign-in, the role's menu, a clerk refused the approvals page (403 page, audited), the customer view
with a bill's red reversal, the cookies' flags and the Content Security Policy, a form without its
CSRF token refused (audited), English on request, sign-out, and a session that expires when the
clock moves on. Every page is saved as a screenshot (not blank) and meets the accessibility rules.
Every role's menu and pages against the role table (over HTTP, without a browser: no page is drawn)."""
from __future__ import annotations

from datetime import timedelta

import pytest

import pyotp

from api.console.menu import MENU
from api_harness import T0, add_client_with_key, operator_name, running_service, signed_in_client
from config.clock import Clock
from console_harness import Operator, in_browser, needs_chromium
from identity_helpers import ADMIN, FAST, PASSWORD, audit_rows
from ledger.identity import ROLES, add_operator
from ledger.identity.totp import code_at
from ledger.corrections import correct_bill
from ledger_helpers import add_banks, add_bill, add_customer, assert_ledger_verifies

pytestmark = needs_chromium
CUSTOMER = "C1"
CLERK = operator_name("clerk")


@pytest.fixture
def service(sqlite_url):
    with running_service(sqlite_url) as running:
        with running.engine.begin() as conn:
            add_banks(conn, "0102")
            add_customer(conn, CUSTOMER)
            bill = add_bill(conn, CUSTOMER, "202611", 123_456_78, 150)
        correct_bill(running.engine, bill, principal=100_000_00, penalty=0, actor="operator:op-clerk",
                     reason="meter misread", clock=Clock(), now=T0 + timedelta(minutes=5))
        yield running


def clerk_session(browser, service, shots):
    clerk = Operator(browser, service.base_url, shots, "clerk")
    first = clerk.page.goto("/console/")
    assert "/console/sign-in" in clerk.page.url and "请先登录" in clerk.page.content()
    assert first.status == 200
    clerk.check("sign-in")
    clerk.sign_in(CLERK)
    assert clerk.page.url.endswith("/console/")
    menu = clerk.page.get_by_role("navigation").inner_text()
    assert "客户查询" in menu and "审批" not in menu, menu          # the menu shows only what the role may use
    clerk.check("home")

    answer = clerk.goto("/console/approvals")
    assert answer.status == 403 and "无权访问" in clerk.page.content()
    clerk.check("approvals-refused")

    clerk.goto("/console/customers")
    clerk.page.get_by_label("户名（包含）").fill("客户C")
    clerk.page.get_by_role("button", name="查询").click()
    clerk.page.wait_for_url("**/console/customers?*")
    found = clerk.page.locator("main table").inner_text()
    assert CUSTOMER in found and "138****0000" in found          # mobiles masked in a list, as the API's
    clerk.check("customers")
    clerk.goto("/console/customers")
    clerk.page.get_by_label("客户编号").fill(CUSTOMER)
    clerk.page.get_by_role("button", name="查询").click()
    clerk.page.wait_for_url(f"**/console/customers/{CUSTOMER}")
    page_text = clerk.page.inner_text("main")
    assert "¥123,456.78" in page_text and "¥100,000.00" in page_text       # yuan, thousands separated
    assert "冲红" in page_text and "已被" in page_text and "替代" in page_text   # the red-reversal history
    assert "2026-12-01 10:05:00" in page_text                                    # local time (UTC+8)
    assert clerk.page.locator("tr.kind-R").count() == 1
    assert clerk.page.locator("#start-debit").count() == 0                       # a clerk has no debit.single
    clerk.check("customer")
    return clerk


def protection(clerk, service):
    headers = clerk.goto("/console/").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    cookie = next(c for c in clerk.context.cookies() if c["name"] == "gp_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert not cookie["secure"]            # plain HTTP on 127.0.0.1: Secure only over TLS (docs/console.md)
    # a form sent without its token, or with another's: refused before anything happens
    for form in ({}, {"csrf_token": "0" * 64}):
        refused = clerk.page.request.post("/console/sign-out", form=form, max_redirects=0)
        assert refused.status == 403 and "请求被拒绝" in refused.text()
    assert clerk.goto("/console/").status == 200          # the session was not ended
    refusals = audit_rows(service.engine, "console.csrf_refused")
    assert [(r["actor"], r["reason"]) for r in refusals] == [(f"operator:{CLERK}", "csrf")] * 2


def english(clerk):
    clerk.goto(f"/console/customers/{CUSTOMER}?lang=en")
    assert "Bills (with their red reversals)" in clerk.page.content()
    clerk.check("customer-en")
    clerk.goto("/console/")
    assert "Sign out" in clerk.page.content()            # the cookie keeps the choice
    clerk.goto("/console/?lang=zh")


def sign_out_and_expiry(clerk, service):
    clerk.page.get_by_role("button", name="退出").click()
    clerk.page.wait_for_url("**/console/sign-in?m=signed_out")
    assert "您已退出" in clerk.page.content()
    clerk.check("signed-out")
    clerk.goto("/console/customers")
    assert "/console/sign-in" in clerk.page.url           # the ended session opens nothing

    clerk.sign_in(CLERK)
    idle = service.app.state.context.settings.access.session_idle_minutes
    service.advance(timedelta(minutes=idle + 1))
    clerk.goto("/console/customers")
    assert "/console/sign-in?m=expired" in clerk.page.url and "会话已过期" in clerk.page.content()
    clerk.check("expired")


def test_a_clerk_signs_in_is_refused_approvals_and_signs_out(service, tmp_path):
    def scenario(browser):
        clerk = clerk_session(browser, service, tmp_path)
        protection(clerk, service)
        english(clerk)
        sign_out_and_expiry(clerk, service)
        return clerk.seen

    seen = in_browser(scenario)
    shots = sorted(tmp_path.glob("clerk-*.png"))
    assert len(seen) == len(shots) == 8 and all(shot.stat().st_size for shot in shots)
    forbidden = audit_rows(service.engine, "access.forbidden")
    assert [(r["actor"], r["details"]["permission"]) for r in forbidden] == [
        (f"operator:{CLERK}", "refund.approve.accounting")]
    assert [r["reason"] for r in audit_rows(service.engine, "session.refused")] == ["session_idle"]
    assert [r["actor"] for r in audit_rows(service.engine, "logout")] == [f"operator:{CLERK}"]
    assert_ledger_verifies(service.engine)


def test_an_api_key_or_a_wrong_password_does_not_sign_in(service, tmp_path):
    key = add_client_with_key(service.engine, "billing", ["customer.read"])

    def scenario(browser):
        someone = Operator(browser, service.base_url, tmp_path, "stranger")
        someone.sign_in(CLERK, "wrong-password-1")
        assert "用户名、密码或动态口令错误" in someone.page.content() and "/console/sign-in" in someone.page.url
        someone.check("refused")
        someone.sign_in("billing", key)                      # a client's name and key: not an operator
        assert "用户名、密码或动态口令错误" in someone.page.content()
        assert not [c for c in someone.context.cookies() if c["name"] == "gp_console"]
        someone.context.add_cookies([{"name": "gp_console", "value": key, "url": service.base_url + "/console/"}])
        someone.goto("/console/customers")                   # an API key is not a session
        assert "/console/sign-in?m=needed" in someone.page.url
        missing = someone.page.request.post("/console/sign-in", form={"user": CLERK, "password": "x"},
                                            max_redirects=0)
        assert missing.status == 403

    in_browser(scenario)
    assert [r["reason"] for r in audit_rows(service.engine, "login.refused")] == ["bad_password", "unknown_user"]
    assert [r["reason"] for r in audit_rows(service.engine, "session.refused")] == ["no_session"]
    assert [r["actor"] for r in audit_rows(service.engine, "console.csrf_refused")] == ["anonymous"]


def test_an_operator_with_totp_signs_in_with_the_code(service, tmp_path):
    with service.engine.begin() as conn:
        _id, uri = add_operator(conn, T0, ADMIN, "op-totp", "Two Factors", ["clerk"], PASSWORD, FAST, totp=True)
    code = code_at(pyotp.parse_uri(uri).secret, service.app.state.context.now())

    def scenario(browser):
        operator = Operator(browser, service.base_url, tmp_path, "totp")
        operator.sign_in("op-totp")
        assert "/console/sign-in" in operator.page.url and "用户名、密码或动态口令错误" in operator.page.content()
        operator.sign_in("op-totp", totp=code)
        assert operator.page.url.endswith("/console/") and "Two Factors" in operator.page.content()

    in_browser(scenario)
    assert [r["reason"] for r in audit_rows(service.engine, "login.refused")] == ["totp_missing"]
    assert [r["actor"] for r in audit_rows(service.engine, "login")] == ["operator:op-totp"]


def test_every_role_sees_in_its_menu_and_opens_exactly_the_pages_its_permissions_allow(service):
    for role, permissions in ROLES.items():
        http = signed_in_client(service, operator_name(role))
        try:
            home = http.get("/console/")
            for item in MENU:
                allowed = not item.permissions or bool(set(item.permissions) & permissions)
                assert (f'href="{item.path}" accesskey=' in home.text) == allowed, (role, item.key)
                answer = http.get(item.path)
                assert answer.status_code == (200 if allowed else 403), (role, item.path, answer.status_code)
        finally:
            http.close()
    refused = audit_rows(service.engine, "access.forbidden")
    expected = sum(1 for permissions in ROLES.values() for item in MENU
                   if item.permissions and not set(item.permissions) & permissions)
    assert len(refused) == expected and expected > 0
