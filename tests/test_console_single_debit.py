"""A single real-time debit from the console's customer view, in a real browser: an operations
operator starts it, a `gridpay engine` process sends it to a `gridpay sim bank` process, and the
page shows the bank's answer (approved; declined 51 for an account without the money). The same
code as ``POST /v1/debits`` made it: the channel recorded, the operator audited; the ledger
verifies. (On SQLite and PostgreSQL.)"""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from api_harness import operator_name, running_service
from config.settings import ApiConfig
from console_harness import Operator, in_browser, needs_chromium
from ledger.schema import audit_log, debits
from ledger_helpers import assert_ledger_verifies
from test_api_single_debit import DEBIT, POOR, RICH, Site
from test_engine_support import make_settings, seed

pytestmark = [pytest.mark.slow, needs_chromium]
OPERATIONS = operator_name("operations")


@pytest.fixture
def procs(tmp_path, db_url):
    site = Site(tmp_path, db_url)
    yield site
    site.close()


def start_debit(operator: Operator, customer: str, channel: str) -> str:
    operator.goto(f"/console/customers/{customer}")
    operator.page.get_by_label("发起渠道").select_option(channel)
    operator.page.get_by_role("button", name="发起代扣").click()
    operator.page.wait_for_url("**/console/debits/*")
    return operator.page.locator("#outcome").inner_text()


def scenario(browser, service, shots, ok, poor):
    ops = Operator(browser, service.base_url, shots, "operations")
    ops.sign_in(OPERATIONS)
    ops.goto(f"/console/customers/{ok}")
    assert ops.page.locator("#start-debit").count() == 1
    ops.check("customer")
    assert start_debit(ops, ok, "call_centre") == "扣款成功"
    assert "呼叫中心" in ops.page.inner_text("main")
    ops.check("approved")
    assert start_debit(ops, poor, "district_office") == "银行拒绝"
    assert "51" in ops.page.inner_text("main") and "insufficient funds" in ops.page.inner_text("main")
    ops.check("declined")
    ops.goto(f"/console/customers/{ok}")
    assert "approved" in ops.page.locator("section", has_text="代扣记录").inner_text()


def test_an_operator_starts_a_single_debit_and_sees_the_answer(procs, db_url, tmp_path):
    engine, (ok, poor) = seed(db_url, 2)
    port = procs.sim({f"A{ok}": RICH, f"A{poor}": POOR})
    procs.configure(port, **DEBIT)
    settings = make_settings(db_url, port, **DEBIT)
    shots = tmp_path / "shots"     # the engine's and the simulator's files are in tmp_path
    shots.mkdir()
    with running_service(db_url, ApiConfig(single_debit_wait_max_s=60), settings) as service:
        procs.engine("e1")
        in_browser(scenario, service, shots, ok, poor)
    with engine.connect() as conn:
        made = conn.execute(select(debits.c.customer_no, debits.c.channel, debits.c.state)
                            .order_by(debits.c.debit_id)).all()
        audited = conn.execute(select(audit_log.c.actor, audit_log.c.details)
                               .where(audit_log.c.action == "debit.create")).all()
    assert [tuple(r) for r in made] == [(ok, "call_centre", "approved"), (poor, "district_office", "declined")]
    assert [(a.actor, json.loads(a.details)["channel"]) for a in audited] == [
        (f"operator:{OPERATIONS}", "call_centre"), (f"operator:{OPERATIONS}", "district_office")]
    assert len(list(shots.glob("*.png"))) == 3
    assert_ledger_verifies(engine)
    engine.dispose()
