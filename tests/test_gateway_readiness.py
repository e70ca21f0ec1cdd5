"""/readyz reflects commits actually completing, not only a database that answers a probe: a lock
held elsewhere makes every posting time out while SELECT 1 still succeeds (PostgreSQL)."""
import json
import urllib.error
import urllib.request

import pytest_twisted
from sqlalchemy import text
from twisted.internet import reactor, threads

from config.settings import Settings
from gateway_harness import answer_or_none, code_of, connected_bank, settings_tree, start_gateway, stop_all
from ledger_helpers import add_banks, add_customer, assert_ledger_verifies, new_engine

BANK = "01020000"


def readyz(gw) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{gw.ops_port.getHost().port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


@pytest_twisted.ensureDeferred
async def test_pg_readyz_fails_while_commits_wait_behind_a_lock_and_recovers(pg_url):
    engine = new_engine(pg_url)
    with engine.begin() as conn:
        add_banks(conn, BANK)
        add_customer(conn, "LOCKED")
        add_customer(conn, "FREE")
    tree = settings_tree(pg_url, **{BANK: {"request_timeout_s": 2}})
    tree["database"]["statement_timeout_s"] = 1
    gw = await start_gateway(reactor, pg_url, settings=Settings.model_validate(tree))
    bank = await connected_bank(reactor, gw, BANK)
    holder = engine.connect()
    try:
        assert (await threads.deferToThread(readyz, gw))[0] == 200
        tx = holder.begin()
        holder.execute(text("SELECT 1 FROM customers WHERE customer_no = 'LOCKED' FOR UPDATE"))
        answer = await answer_or_none(bank, "0200", bank.payment_fields("LOCKED", 100), within=4)
        assert answer is None or code_of(answer) == "96"
        status, body = await threads.deferToThread(readyz, gw)
        assert status == 503 and body["database"] == "ok" and body["commits"] != "ok", body
        tx.rollback()
        paid = await bank.send("0200", bank.payment_fields("FREE", 100))
        assert code_of(paid) == "00"
        status, body = await threads.deferToThread(readyz, gw)
        assert status == 200 and body["commits"] == "ok", body
    finally:
        holder.close()
        await stop_all(gw, bank)
        engine.dispose()
    assert_ledger_verifies(pg_url)
