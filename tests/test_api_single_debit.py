"""``POST /v1/debits`` over real HTTP on SQLite and PostgreSQL, with a real `gridpay engine` process claiming
the single debits and a `gridpay sim bank` process answering them: approved; declined 51 with its
reason; a bank that takes the money and never answers -> unknown with the reversal under way, then
reversed once a bank answers the 0421; the channel recorded, audited and counted by the debits
report; an idempotent retry answers the same debit; refusals as problems. (On SQLite one engine
runs at a time: each is stopped before the next starts.)"""
from __future__ import annotations

import json
import signal
import uuid

import pytest
from sqlalchemy import select

from api.problems import BASE
from api_harness import T0, add_client_with_key, running_service
from config.clock import Clock
from config.settings import ApiConfig
from ledger.schema import audit_log
from ledger.finance_reports import debits_report
from test_engine_process import Procs, wait_until
from test_engine_support import make_settings, seed

pytestmark = pytest.mark.slow

RICH, POOR = (10_000_000, 0, "A"), (100, 0, "A")


class Site(Procs):
    """The bank simulator and the engines; ``restart`` swaps the bank for another and the engine
    for a new one that connects to it (an engine stopped by SIGTERM hands its work back)."""

    def engine(self, name: str):
        self.running = super().engine(name)
        return self.running

    def restart(self, accounts: dict, name: str, *sim_options: str) -> None:
        self.stop_sim()
        self.running.send_signal(signal.SIGTERM)
        self.running.communicate(timeout=60)
        self.configure(self.sim(accounts, *sim_options), **DEBIT)
        self.engine(name)


DEBIT = {"timeout_s": 2.0, "reversal_interval_s": 1.0, "reversal_max": 30}


@pytest.fixture
def procs(tmp_path, db_url):
    p = Site(tmp_path, db_url)
    yield p
    p.close()


def start(http, customer: str, channel: str, wait_s: float = 30, key: str | None = None):
    return http.post("/v1/debits", json={"customer_no": customer, "channel": channel, "wait_s": wait_s},
                     headers={"Idempotency-Key": key or uuid.uuid4().hex})


def test_single_debits_approved_declined_unknown_then_reversed(procs, db_url):
    engine, (ok, poor, lost, other) = seed(db_url, 4)
    port = procs.sim({f"A{ok}": RICH, f"A{poor}": POOR, f"A{other}": RICH})
    procs.configure(port, **DEBIT)
    settings = make_settings(db_url, port, **DEBIT)
    with running_service(db_url, ApiConfig(single_debit_wait_max_s=60), settings) as service:
        key = add_client_with_key(service.engine, "voice", ["debit.single"])
        with service.client(key) as http:
            # no engine running yet: the debit waits (pending), and a second one for the customer is refused
            pending = start(http, other, "counter", wait_s=0).json()
            assert pending["outcome"] == "pending" and pending["state"] == "pending", pending
            busy = start(http, other, "counter")
            assert busy.status_code == 409 and busy.json()["type"] == BASE + "debit-in-flight", busy.text
        procs.engine("e1")
        with service.client(key) as http:
            first_key = uuid.uuid4().hex
            approved = start(http, ok, "voice", key=first_key)
            assert approved.status_code == 201, approved.text
            body = approved.json()
            assert body["outcome"] == "approved" and body["channel"] == "voice" and body["approval_code"]
            assert approved.headers["Location"] == f"/v1/debits/{body['debit_id']}"
            assert [a["event"] for a in body["attempts"]][:2] == ["created", "sent"]
            # the same request again: the same debit (no second one), marked as replayed
            again = start(http, ok, "voice", key=first_key)
            assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
            assert again.json()["debit_id"] == body["debit_id"] and again.json()["outcome"] == "approved"
            # a new request for the paid customer: nothing is due
            nothing = start(http, ok, "voice")
            assert nothing.status_code == 422 and nothing.json()["reason"] == "nothing-due", nothing.text

            declined = start(http, poor, "online_banking").json()
            assert declined["outcome"] == "declined" and declined["response_code"] == "51"
            assert declined["reason"] == "insufficient funds" and declined["channel"] == "online_banking"

            unknown_customer = start(http, "NOBODY", "voice")
            assert unknown_customer.status_code == 404 and unknown_customer.json()["type"] == BASE + "not-found"
            bad_channel = start(http, other, "carrier_pigeon")
            assert bad_channel.status_code == 422 and bad_channel.json()["type"] == BASE + "invalid-request"

            # the engine took the waiting one too
            polled = http.get(f"/v1/debits/{pending['debit_id']}")
            assert polled.status_code == 200 and polled.json()["channel"] == "counter"
            wait_until(lambda: http.get(f"/v1/debits/{pending['debit_id']}").json()["outcome"] == "approved",
                       timeout=60, what="the counter's debit approved")

        # a bank that applies and never answers: unknown, reversal under way
        procs.restart({f"A{lost}": RICH}, "e2", "--drop-after-apply", "1.0")
        with service.client(key) as http:
            unknown = start(http, lost, "call_centre").json()
            assert unknown["outcome"] == "unknown", unknown
            assert unknown["reason"] == "reversal under way" and unknown["reversal"]["state"] == "pending"
            # the bank comes back answering: the 0421 is answered and the debit is reversed
            procs.restart({f"A{lost}": RICH}, "e3")
            wait_until(lambda: http.get(f"/v1/debits/{unknown['debit_id']}").json()["outcome"] == "reversed",
                       timeout=120, what="the reversal answered")
            final = http.get(f"/v1/debits/{unknown['debit_id']}").json()
            assert final["reversal"]["state"] == "answered" and final["reason"].startswith("reversed")

    counted = debits_report(engine, Clock().business_date(T0), Clock()).rows
    assert counted == {("01020000", "voice", "approved"): [1, body["amount_fen"]],
                       ("01020000", "online_banking", "declined"): [1, declined["amount_fen"]],
                       ("01020000", "counter", "approved"): [1, pending["amount_fen"]],
                       ("01020000", "call_centre", "reversed"): [1, unknown["amount_fen"]]}
    with engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.actor, audit_log.c.details)
                               .where(audit_log.c.action == "debit.create")).all()
    assert all(a.actor == "client:voice" for a in audited)
    assert sorted(json.loads(a.details)["channel"] for a in audited) == ["call_centre", "counter", "online_banking",
                                                                          "voice"]
    engine.dispose()
