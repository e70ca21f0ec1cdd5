"""Debit plans: `gridpay plan add|list|pause|resume|run-now`, who a batch takes (agreement, due
date rule, district, customer list) and who it leaves out and why (limit, suspended)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner
from sqlalchemy import select, update

from config.settings import environment_for
from engines.plans import build_batch
from engines.tables import debit_chunks, debit_skips
from gridpay.cli import gridpay
from config.clock import Clock
from ledger.schema import agreements, customers, debit_bills, debits
from ledger_helpers import T0, add_bills
from identity_helpers import operator_env
from test_engine_support import BANK, FILE_BANK, add_agreements, seed, set_district, settings_tree


def cli(env, *args):
    result = CliRunner().invoke(gridpay, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_plan_commands(sqlite_url, tmp_path):
    engine, numbers = seed(sqlite_url, 6, limit=20_000)
    with engine.begin() as conn:
        conn.execute(update(agreements).where(agreements.c.customer_no == numbers[0]).values(debit_limit=5_000))
        conn.execute(update(customers).where(customers.c.customer_no == numbers[1]).values(status="S"))
    env = operator_env(engine, "wang", ["operations"],
                       environment_for(settings_tree(sqlite_url, drop_dir=str(tmp_path / "drop"))))
    code, out = cli(env, "plan", "add", "monthly", "--bank", BANK, "--cron", "0 9 5 * *", "--due-days", "30")
    assert code == 0 and "monthly added" in out
    code, out = cli(env, "plan", "add", "bad", "--bank", BANK, "--cron", "every day")
    assert code != 0 and "not a cron expression" in out
    code, out = cli(env, "plan", "add", "east", "--bank", BANK, "--cron", "0 9 5 * *", "--district", "东区")
    assert code != 0 and "no customer could be in it" in out
    code, out = cli(env, "plan", "list", "--json")
    plans = json.loads(out)
    assert [(p["name"], p["status"], p["cron"], p["due_days"]) for p in plans] == [("monthly", "A", "0 9 5 * *", 30)]
    assert cli(env, "plan", "pause", "monthly")[0] == 0
    assert json.loads(cli(env, "plan", "list", "--json")[1])[0]["status"] == "P"
    assert cli(env, "plan", "resume", "monthly")[0] == 0
    code, out = cli(env, "plan", "list")
    assert "monthly" in out and "active" in out
    code, out = cli(env, "plan", "run-now", "monthly")
    assert code == 0, out
    assert "4 debits" in out and "2 skipped" in out
    assert f"skipped {numbers[0]} (10050 fen): total due 10050 fen exceeds the agreement's debit limit 5000 fen" in out
    assert f"skipped {numbers[1]} (10050 fen): customer is suspended" in out
    with engine.connect() as conn:
        assert len(conn.execute(select(debit_skips)).all()) == 2
        assert {r.state for r in conn.execute(select(debit_chunks))} == {"ready"}
    assert cli(env, "plan", "pause", "nosuch")[0] != 0
    engine.dispose()



def test_run_now_follows_the_sites_cutoff(sqlite_url, tmp_path, monkeypatch):
    """`plan run-now` dates its batch by the site's business calendar, not the built-in one: at
    12:00 in Shanghai with a cut-off at 11:00 it is already the 28th, so a bill due the 28th is due."""
    engine, numbers = seed(sqlite_url, 2)
    with engine.begin() as conn:
        add_bills(conn, [(numbers[0], "202603", 700, 0)])      # due 2026-03-28
    tree = settings_tree(sqlite_url, drop_dir=str(tmp_path / "drop"))
    tree["business"] = {"timezone": "Asia/Shanghai", "cutoff": "11:00"}
    env = operator_env(engine, "wang", ["operations"], environment_for(tree))
    monkeypatch.setattr("gridpay.debit_commands._now", lambda: datetime(2026, 3, 27, 4, 0, tzinfo=timezone.utc))
    assert cli(env, "plan", "add", "monthly", "--bank", BANK, "--cron", "0 9 5 * *")[0] == 0
    code, out = cli(env, "plan", "run-now", "monthly")
    assert code == 0, out
    with engine.connect() as conn:
        owed = dict(conn.execute(select(debits.c.customer_no, debits.c.amount)).all())
    assert owed == {numbers[0]: 10_050 + 700, numbers[1]: 10_050}
    engine.dispose()

def test_batch_selection_rules(db_url):
    engine, numbers = seed(db_url, 8, bills_each=2)     # bills 202601 and 202602, due the 28th of their month
    set_district(engine, numbers[:4], "east")
    cal = Clock()
    with engine.begin() as conn:
        add_bills(conn, [(numbers[0], "202612", 700, 0)])   # due 2026-12-28: after the run date
        # a customer with an agreement at another bank only is not taken
        conn.execute(update(agreements).where(agreements.c.customer_no == numbers[7]).values(bank_code=FILE_BANK))
    with engine.begin() as conn:
        s = build_batch(conn, bank_code=BANK, at=T0, clock=cal, district="east", chunk_size=3)
    assert s.debits == 4 and s.chunks == 2 and s.total == 4 * 2 * 10_050
    with engine.begin() as conn:
        s2 = build_batch(conn, bank_code=BANK, at=T0, clock=cal, due_days=40, chunk_size=3)
    # east customers' bills are in open debits; the west ones are taken; the December bill now falls due
    assert s2.debits == 4 and s2.total == 3 * 2 * 10_050 + 700
    with engine.begin() as conn:
        s3 = build_batch(conn, bank_code=BANK, at=T0 + timedelta(days=1), clock=cal,
                         customers_only=[numbers[7]], chunk_size=3)
    assert s3.debits == 0
    with engine.connect() as conn:
        rows = conn.execute(select(debits.c.customer_no, debits.c.account_no, debits.c.amount, debits.c.chunk_no)
                            .where(debits.c.batch_id == s.batch_id).order_by(debits.c.customer_no)).all()
        assert [r.account_no for r in rows] == [f"A{c}" for c in numbers[:4]]
        assert [r.chunk_no for r in rows] == [0, 0, 0, 1]
        assert conn.execute(select(debit_bills).where(debit_bills.c.debit_id.in_(s.debit_ids))).all().__len__() == 8
    engine.dispose()


def test_agreement_for_other_customers_only(sqlite_url):
    engine, numbers = seed(sqlite_url, 3)
    more = ["X00000001"]
    from ledger_helpers import add_customer
    with engine.begin() as conn:
        add_customer(conn, more[0])
        add_bills(conn, [(more[0], "202601", 100, 0)])
    add_agreements(engine, more)
    with engine.begin() as conn:
        s = build_batch(conn, bank_code=BANK, at=T0, clock=Clock(), customers_only=more)
    assert s.debits == 1 and s.total == 100
    engine.dispose()


def test_a_build_writes_its_rows_under_generic_plans_on_postgresql(pg_url):
    """Each row a build writes fires foreign-key checks; under our sessions' custom plans each was
    planned afresh, row after row (a full-size bank's build spent 30 of its 40 s in its inserts).
    The build's inserts run under generic plans, and custom plans come back after them."""
    from sqlalchemy import event

    engine, numbers = seed(pg_url, 5)
    sent = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: sent.append(statement))
    with engine.begin() as conn:
        s = build_batch(conn, bank_code=BANK, at=T0, clock=Clock(), due_days=40, chunk_size=2)
    engine.dispose()
    assert s.debits == 5
    plans = [i for i, sql in enumerate(sent) if "plan_cache_mode" in sql]
    inserts = [i for i, sql in enumerate(sent) if sql.startswith("INSERT INTO debit")]
    assert len(plans) == 2 and "force_generic_plan" in sent[plans[0]] and "force_custom_plan" in sent[plans[1]]
    assert inserts and all(plans[0] < i < plans[1] for i in inserts if "debit_batches" not in sent[i])


def test_a_district_plan_takes_the_customers_the_billing_files_put_in_that_district(db_url, tmp_path):
    """customers.csv carries `district` (billing files 1.1): a plan limited to a district debits
    exactly its customers (before, nothing filled the column and such a plan built empty batches)."""
    from ledger.imports import HEADERS, import_files
    from ledger_helpers import assert_ledger_verifies, new_engine
    from test_ledger_imports import write_csv

    header = (*HEADERS["customers"], "district")
    nos = [f"D{i:03d}" for i in range(12)]
    district = {no: ("TIANHE", "YUEXIU", "")[i % 3] for i, no in enumerate(nos)}
    files = {
        "customers": write_csv(tmp_path / "customers.csv", "customers",
                               [[no, "王五", "R", "A", "Y", "", district[no]] for no in nos], header=header),
        "agreements": write_csv(tmp_path / "agreements.csv", "agreements",
                                [[no, BANK, f"A{no}", "王五", "A", "0"] for no in nos]),
        "bills": write_csv(tmp_path / "bills.csv", "bills",
                           [[no, "202610", f"P{no}", "5000", "0", "2026-11-20"] for no in nos]),
    }
    engine = new_engine(db_url)
    results = import_files(engine, files, "clerk.li")
    assert all(r.ok for r in results.values()), {k: r.errors for k, r in results.items()}
    with engine.begin() as conn:
        s = build_batch(conn, bank_code=BANK, at=T0, clock=Clock(), district="TIANHE", chunk_size=2)
    assert s.debits == 4 and s.total == 4 * 5_000 and s.chunks == 2
    with engine.connect() as conn:
        taken = conn.execute(select(debits.c.customer_no).where(debits.c.batch_id == s.batch_id)).scalars().all()
    assert sorted(taken) == [no for no in nos if district[no] == "TIANHE"]
    engine.dispose()
    assert_ledger_verifies(db_url)
