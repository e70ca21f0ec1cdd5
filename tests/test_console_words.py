"""The console's words over HTTP (no browser: the pages' HTML), on SQLite and PostgreSQL: banks by
name with their code as the reports say them, and a batch's mode, state and debits by state in the
page's language, from the one catalogue."""
from __future__ import annotations

import re

import pytest

from api.console.i18n import MESSAGES
from api_harness import T0, operator_name, running_service, signed_in_client
from config.clock import Clock
from config.settings import Settings
from engines.plans import add_plan, run_now
from ledger.recon.matching import reconcile_bank_file
from ledger.synchronous_posting import post
from ledger_helpers import payment
from test_engine_support import BANK, FILE_BANK, seed, settings_tree
from test_recon_support import line_of, write_bank_file

OPERATIONS, CLERK = operator_name("operations"), operator_name("clerk")
TODAY = Clock().business_date(T0)
NAMED = {"zh": f"中国工商银行（{BANK}）", "en": f"ICBC ({BANK})"}


@pytest.fixture
def service(db_url, tmp_path):
    engine, numbers = seed(db_url, 4)
    tree = settings_tree(db_url, drop_dir=str(tmp_path / "drop"))
    tree["banks"][BANK].update(name="中国工商银行", name_en="ICBC")
    settings = Settings.model_validate(tree)
    paid = payment(BANK, numbers[-1], 10_050, at=T0)
    post(engine, [paid])
    run = reconcile_bank_file(engine, write_bank_file(tmp_path, [line_of(paid)], day=TODAY), actor="alice")
    add_plan(engine, name="monthly", bank_code=BANK, cron="0 9 5 * *", now=T0, actor="operator:ops")
    batch = run_now(engine, settings, "monthly", now=T0, actor="operator:ops")
    with running_service(db_url, settings=settings) as running:
        running.run_id, running.batch_id, running.debits = run.run_id, batch.batch_id, batch.debits
        yield running
    engine.dispose()


def row(page: str, row_id: str) -> str:
    found = re.search(rf'<tr id="{row_id}"[^>]*>(.*?)</tr>', page, re.S)
    assert found, f"no row {row_id}"
    return re.sub(r"<[^>]+>", " ", found.group(1))


def test_glance_and_plans_name_banks_and_say_batches_in_the_pages_language(service):
    http = signed_in_client(service, OPERATIONS)
    try:
        for lang, words in (("zh", ("联机", "执行中", f"待发送 {service.debits}")),
                            ("en", ("online", "ready", f"pending {service.debits}"))):
            for path in ("/console/glance", "/console/glance/fragment"):
                page = http.get(f"{path}?lang={lang}").text
                assert NAMED[lang] in row(page, f"link-{BANK}-debit") and NAMED[lang] in row(page, f"link-{BANK}-counter")
                assert FILE_BANK in row(page, f"link-{FILE_BANK}-debit")        # a bank without a name: its code
                batch = row(page, f"batch-{service.batch_id}")
                assert NAMED[lang] in batch and all(w in batch for w in words), (lang, batch)
                if lang == "zh":
                    assert not re.search(r"\b(online|ready|pending)\b", batch), batch
            plans = http.get(f"/console/plans?lang={lang}").text
            assert NAMED[lang] in row(plans, "plan-monthly") and NAMED[lang] in row(plans, f"bank-{BANK}")
            assert all(w in row(plans, f"batch-{service.batch_id}") for w in words)
    finally:
        http.close()


def test_the_workbench_names_the_runs_bank(service):
    http = signed_in_client(service, CLERK)
    try:
        for lang in ("zh", "en"):
            page = http.get(f"/console/recon/runs/{service.run_id}?lang={lang}").text
            assert re.search(rf"<dd>{re.escape(NAMED[lang])}</dd>", page), page
            assert NAMED[lang] in http.get(f"/console/recon?lang={lang}").text
    finally:
        http.close()


def test_every_batch_and_debit_state_has_its_words():
    for key in ("batch.mode.online", "batch.mode.file", *(f"batch.state.{s}" for s in (
            "ready", "done", "new", "written", "applied", "expired")), *(f"debit.state.{s}" for s in (
            "pending", "sent", "approved", "declined", "unknown", "reversed"))):
        zh, en = MESSAGES[key]
        assert zh and en and zh != en, key
