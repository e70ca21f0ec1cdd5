"""The outbound debit link (engines/link.py) against the real bank host simulator on 127.0.0.1."""
from __future__ import annotations

import json
import random
from datetime import date, datetime
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater

from config.settings import BankConfig, DebitLinkConfig
from engines.link import (BankLink, DebitTimeout, LinkDown, LinkMetrics, LinkStopped, OutcomeUnknown,
                          PrometheusLinkMetrics, debit_fields, original_data, reversal_fields)
from runtime.ratelimit import Backoff, TokenBucket
from gateway.sim.bank import Account, BankHost, Behaviour
from iso8583_specs.dialects import get_dialect
from iso8583_specs.links import Stans

BANK = "01020000"
ZMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
VECTORS = Path(__file__).with_name("spec") / "vectors.json"  # docs/spec/INTERFACE.md's conformance vectors


def accounts():
    return {"A1": Account(10_000_000), "POOR": Account(500), "LIM": Account(1_000_000, 2_000),
            "SHUT": Account(100_000, 0, "C")}


@pytest.fixture
def env():
    """Makes hosts and links; stops them all after the test."""
    made = {"hosts": [], "links": []}

    class Env:
        stans = Stans(1)

        def host(self, behaviour=None, dialect="ascii", zmk=ZMK, **kw):
            host = BankHost(reactor, BANK, get_dialect(dialect), zmk, accounts(), behaviour or Behaviour(),
                            business_date=date(2026, 3, 14), **kw)
            host.start()
            made["hosts"].append(host)
            return host

        def link(self, host_or_port, dialect="ascii", clock=None, keys=None, **debit):
            port = host_or_port if isinstance(host_or_port, int) else host_or_port.port
            cfg = BankConfig(dialect=dialect, debit=DebitLinkConfig(**{"host": "127.0.0.1", "port": port,
                                                                       "timeout_s": 5.0, **debit}))
            late = []
            link = BankLink(reactor, BANK, cfg, ZMK, clock=clock, on_late_response=late.append,
                            rng=random.Random(3), keys=keys)
            link.late = late
            made["links"].append(link)
            return link.start()

        def debit(self, account="A1", amount=1000, stan=None):
            stan = stan or self.stans.next()
            return debit_fields(bank_code=BANK, transmitted="0314101500", stan=stan, rrn=f"00000{stan}1",
                                customer_no="C001", account_no=account, bills=[("202602", amount, 0)])

    yield Env()
    for link in made["links"]:
        pytest_twisted.blockon(link.stop())
    for host in made["hosts"]:
        pytest_twisted.blockon(host.stop())


async def until(cond, timeout=5.0):
    waited = 0.0
    while not cond():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


async def failure_of(d):
    try:
        await d
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("expected a failure")


# --- sign-on and keys ------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["ascii", "bcd"])
@pytest_twisted.ensureDeferred
async def test_one_sign_on_gives_the_mak_to_every_connection(env, dialect):
    host = env.host(dialect=dialect)
    link = env.link(host, dialect=dialect, connections=3)
    await link.when_ready()
    await until(lambda: len(link.ready_connections()) == 3)
    assert host.counters["sign_ons"] == 1 and link.keys.current(BANK, "debit") == host.mak
    answer = await link.send("0200", env.debit("A1", 1234))
    assert answer.mti == "0210" and answer.fields["39"] == "00" and len(answer.fields["38"]) == 6
    assert host.accounts["A1"].balance == 10_000_000 - 1234


@pytest_twisted.ensureDeferred
async def test_several_connections_under_load_never_see_A0(env):
    host = env.host(Behaviour(latency_ms=5, latency_dist="exponential"))
    link = env.link(host, connections=4)
    await link.when_ready()
    results = await defer.gatherResults([link.send("0200", env.debit("A1", 1 + i)) for i in range(200)])
    assert {m.fields["39"] for m in results} == {"00"} and host.counters["mac_failures"] == 0
    assert host.counters["sign_ons"] == 1


@pytest_twisted.ensureDeferred
async def test_links_converge_on_the_banks_key_when_the_store_saved_sign_ons_out_of_order(env, sqlite_url):
    """Two engines sign on; their saves land the other way round, so the store's newest version is
    the key the bank has already replaced. The bank's MAC tells which key it holds: both links take
    that one, their answers verify, and the store's newest version is the bank's key again."""
    from ledger.key_store import KeyStore
    from ledger.key_store_db import DbKeyBackend
    from ledger_helpers import new_engine

    backend = DbKeyBackend(new_engine(sqlite_url), lambda bank: ZMK)
    host = env.host()
    a = env.link(host, keys=KeyStore(reactor, backend=backend))
    await a.when_ready()
    replaced = host.mak
    b = env.link(host, keys=KeyStore(reactor, backend=backend))
    await b.when_ready()
    assert host.counters["sign_ons"] == 2 and host.mak != replaced
    a.keys.install(BANK, "debit", replaced)      # the first engine's save lands last
    assert b.keys.refresh(BANK, "debit") and b.keys.current(BANK, "debit") == replaced
    answers = await defer.gatherResults([link.send("0200", env.debit("A1", 100 + i))
                                         for i in range(10) for link in (a, b)])
    assert {m.fields["39"] for m in answers} == {"00"}
    assert a.stats["bad_mac"] == b.stats["bad_mac"] == 0
    assert a.keys.current(BANK, "debit") == b.keys.current(BANK, "debit") == host.mak
    assert backend.load(BANK, "debit").current == host.mak


@pytest_twisted.ensureDeferred
async def test_reconnect_reuses_the_key_unless_every_connection_was_lost(env):
    host = env.host()
    clock = Clock()
    link = env.link(host, clock=clock, connections=2)
    await link.when_ready()
    await until(lambda: len(host.connections) == 2)
    next(iter(host.connections)).transport.abortConnection()  # one of two
    await until(lambda: len(link.reconnect_delays) == 1)
    assert link.ready
    clock.advance(link.reconnect_delays[-1])
    await until(lambda: len(link.ready_connections()) == 2)
    assert host.counters["sign_ons"] == 1
    host.drop_connections()  # all of them: the bank may have restarted
    await until(lambda: len(link.reconnect_delays) == 3)
    clock.advance(max(link.reconnect_delays))
    await until(lambda: len(link.ready_connections()) == 2)
    assert host.counters["sign_ons"] == 2 and link.keys.current(BANK, "debit") == host.mak


@pytest_twisted.ensureDeferred
async def test_bank_sign_off_makes_the_link_sign_on_again(env):
    from iso8583_specs import codec
    from config.clock import SYSTEM_CLOCK
    from iso8583_specs.links import times_at

    host = env.host()
    link = env.link(host)
    await link.when_ready()
    (conn,) = host.connections
    fields = {**times_at(SYSTEM_CLOCK.local()), "11": "900001", "32": BANK, "70": "002"}
    host.keys.drop(BANK, "debit")
    conn.write(codec.encode(host.dialect, "0800", fields), None)
    await until(lambda: host.counters["sign_ons"] == 2)
    await link.when_ready()
    assert link.stats["bank_network_002"] == 1
    assert (await link.send("0200", env.debit("A1", 10))).fields["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_field_15_of_every_0810_is_the_utilitys_business_date_across_the_cutoff(env):
    """The gateway answers the bank's 0800s on the debit channel; field 15 is the utility's
    business date (§3, §8: it rolls over at the 23:00 cut-off), not the bank's field 13. The
    link's clock is injected: 22:59:59 and then 23:00:00 in Shanghai on 14 March."""
    from zoneinfo import ZoneInfo

    from config import clock as business_clock
    from iso8583_specs import codec

    host = env.host()
    clock = Clock()                                        # the link's timer: 22:59:59 in Shanghai
    clock.advance(datetime(2026, 3, 14, 22, 59, 59, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp())
    link = env.link(host, clock=business_clock.Clock("Asia/Shanghai", "23:00", timer=clock))
    await link.when_ready()
    (conn,) = host.connections

    async def answer_to(code, f7, stan):
        fields = {"7": f7, "11": stan, "12": f7[4:], "13": f7[:4], "32": BANK, "70": code}
        seen = len(host.network_answers)
        conn.write(codec.encode(host.dialect, "0800", fields), None)
        await until(lambda: len(host.network_answers) > seen)
        answer = host.network_answers[-1]
        assert (answer.mti, answer.fields["11"], answer.fields["13"]) == ("0810", stan, "0314")
        return answer.fields["15"], answer.fields["39"]

    assert await answer_to("301", "0314225959", "900001") == ("0314", "00")
    clock.advance(1.0)                                     # 23:00:00: the next business date
    assert await answer_to("301", "0314230000", "900002") == ("0315", "00")
    assert await answer_to("001", "0314230000", "900003") == ("0315", "40")   # the bank does not sign on here
    host.keys.drop(BANK, "debit")
    assert await answer_to("002", "0314230000", "900004") == ("0315", "00")
    await until(lambda: link.stats["sign_ons"] == 2)      # signed off: the link signs on again


@pytest_twisted.ensureDeferred
async def test_key_check_value_mismatch_disconnects_and_retries_with_backoff(env):
    host = env.host(zmk=bytes.fromhex("00112233445566778899AABBCCDDEEFF"))  # the bank has another ZMK
    clock = Clock()
    link = env.link(host, clock=clock)
    for attempt in range(1, 4):
        await until(lambda: len(link.reconnect_delays) == attempt)
        assert link.stats["sign_on_bad_key"] == attempt and not link.ready
        clock.advance(link.reconnect_delays[-1])
    delays = list(link.reconnect_delays)
    assert delays == sorted(delays) and delays[0] <= 0.5 < delays[-1]


# --- debits ----------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_debit_response_codes(env):
    host = env.host()
    link = env.link(host)
    await link.when_ready()
    codes = {}
    for name, account, amount in [("ok", "A1", 100), ("funds", "POOR", 501), ("limit", "LIM", 2_001),
                                  ("unknown", "NOPE", 1), ("closed", "SHUT", 1)]:
        codes[name] = (await link.send("0200", env.debit(account, amount))).fields["39"]
    assert codes == {"ok": "00", "funds": "51", "limit": "61", "unknown": "14", "closed": "57"}
    assert len(host.applied) == 1


@pytest_twisted.ensureDeferred
async def test_many_in_flight_on_one_connection_matched_by_identity(env):
    host = env.host(Behaviour(latency_ms=15, latency_dist="exponential"), seed=11)
    link = env.link(host, connections=1)
    await link.when_ready()
    sent = [env.debit("A1", 1 + i) for i in range(300)]
    order = []
    ds = []
    for fields in sent:
        d = link.send("0200", fields)
        d.addCallback(lambda m, f=fields: order.append((f["11"], m)))
        ds.append(d)
    await defer.gatherResults(ds)
    for stan, message in order:
        request = next(f for f in sent if f["11"] == stan)
        assert message.fields["11"] == stan and message.fields["4"] == request["4"]
        assert message.fields["39"] == "00"
    assert [s for s, _ in order] != [f["11"] for f in sent]  # answered out of order
    assert host.max_in_flight_seen > 50 and len(host.applied) == 300


@pytest_twisted.ensureDeferred
async def test_in_flight_cap_holds_at_the_bank(env):
    host = env.host(Behaviour(latency_ms=10, latency_dist="uniform"))
    link = env.link(host, connections=3, max_in_flight=7)
    await link.when_ready()
    await until(lambda: len(link.ready_connections()) == 3)
    seen = []

    class Watch(LinkMetrics):
        def in_flight(self, bank, in_flight, queued):
            seen.append(in_flight)
    link.metrics = Watch()
    results = await defer.gatherResults([link.send("0200", env.debit("A1", 1 + i)) for i in range(80)])
    assert all(m.fields["39"] == "00" for m in results)
    assert host.max_in_flight_seen == 7 and max(seen) == 7
    assert link.in_flight == 0 and link.queued == 0


@pytest_twisted.ensureDeferred
async def test_rate_cap_with_a_clock(env):
    host = env.host()
    clock = Clock()
    link = env.link(host, clock=clock, max_per_second=4)  # burst of 1
    await link.when_ready()
    ds = [link.send("0200", env.debit("A1", 1 + i)) for i in range(6)]
    assert link.stats["sent_0200"] == 1 and link.queued == 5
    clock.advance(0.2)
    assert link.stats["sent_0200"] == 1
    clock.advance(0.05)
    assert link.stats["sent_0200"] == 2
    for _ in range(4):
        clock.advance(0.25)
    assert link.stats["sent_0200"] == 6
    await defer.gatherResults(ds)


@pytest_twisted.ensureDeferred
async def test_reversals_go_ahead_of_queued_debits(env):
    host = env.host()
    clock = Clock()
    link = env.link(host, clock=clock, max_per_second=1)
    await link.when_ready()
    first = env.debit("A1", 10)
    ds = [link.send("0200", first)] + [link.send("0200", env.debit("A1", 11 + i)) for i in range(3)]
    rev = link.send("0420", reversal_fields(first, transmitted="0314101600", stan=env.stans.next()))
    clock.advance(1.0)
    assert link.stats["sent_0420"] == 1 and link.stats["sent_0200"] == 1
    for _ in range(3):
        clock.advance(1.0)
    await defer.gatherResults(ds + [rev])


# --- timeouts, late answers, lost connections --------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_timeout_then_late_answer_goes_to_on_late_response(env):
    host = env.host(Behaviour(latency_ms=400))
    link = env.link(host, timeout_s=0.15)
    await link.when_ready()
    fields = env.debit("A1", 50)
    exc = await failure_of(link.send("0200", fields))
    assert type(exc) is DebitTimeout and link.in_flight == 0
    await until(lambda: link.late)
    (late,) = link.late
    assert late.fields["11"] == fields["11"] and late.fields["39"] == "00"
    assert link.stats["late"] == 1 and link.stats["timeouts"] == 1
    # the reversal the caller then sends credits the bank back
    host.behaviour = Behaviour()
    answer = await link.send("0420", reversal_fields(fields, transmitted="0314101600", stan=env.stans.next()))
    assert answer.mti == "0430" and answer.fields["39"] == "00"
    assert host.accounts["A1"].balance == 10_000_000 and next(iter(host.applied.values())).reversed


@pytest_twisted.ensureDeferred
async def test_each_request_times_out_timeout_s_after_it_was_written(env):
    host = env.host(Behaviour(drop_before_apply=1.0))
    clock = Clock()
    link = env.link(host, clock=clock, timeout_s=5.0)
    await link.when_ready()
    first = link.send("0200", env.debit("A1", 1))
    clock.advance(1.0)
    second = link.send("0200", env.debit("A1", 2))
    clock.advance(3.9)
    assert not first.called
    clock.advance(0.1)
    assert type(await failure_of(first)) is DebitTimeout and not second.called
    clock.advance(1.0)
    assert type(await failure_of(second)) is DebitTimeout
    assert link.in_flight == 0 and not host.applied


@pytest_twisted.ensureDeferred
async def test_lost_connection_makes_in_flight_unknown_then_reconnects_with_backoff(env):
    host = env.host(Behaviour(latency_ms=50))
    clock = Clock()
    link = env.link(host, clock=clock)
    await link.when_ready()
    pending = [link.send("0200", env.debit("A1", 1 + i)) for i in range(3)]
    await until(lambda: host.in_flight == 3)
    host.drop_connections()
    for d in pending:
        assert type(await failure_of(d)) is OutcomeUnknown
    assert link.stats["outcome_unknown"] == 3 and len(host.applied) == 3  # applied at the bank: must be reversed
    assert len(link.reconnect_delays) == 1 and not link.ready
    clock.advance(link.reconnect_delays[0])
    await link.when_ready()
    assert (await link.send("0200", env.debit("A1", 5))).fields["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_disconnect_mid_flight_unknown_outcome_is_reversed(env):
    host = env.host(Behaviour(disconnect=1.0))
    clock = Clock()
    link = env.link(host, clock=clock)
    await link.when_ready()
    fields = env.debit("A1", 777)
    assert isinstance(await failure_of(link.send("0200", fields)), OutcomeUnknown)
    host.behaviour = Behaviour()
    clock.advance(link.reconnect_delays[-1])
    await link.when_ready()
    rev = reversal_fields(fields, transmitted="0314101600", stan=env.stans.next())
    assert (await link.send("0420", rev)).fields["39"] == "00"
    assert (await link.send("0421", rev)).fields["39"] == "00"  # a repeat changes nothing
    assert host.accounts["A1"].balance == 10_000_000


@pytest_twisted.ensureDeferred
async def test_refused_connections_back_off_exponentially_and_sends_fail_link_down(env):
    host = env.host()
    port = host.port
    await host.stop()
    clock = Clock()
    link = env.link(port, clock=clock, timeout_s=2.0)
    for attempt in range(1, 9):
        await until(lambda: len(link.reconnect_delays) == attempt)
        clock.advance(link.reconnect_delays[-1])
    delays = list(link.reconnect_delays)
    assert all(a < b for a, b in zip(delays[:6], delays[1:7]))  # grows until the cap
    assert 0.35 <= delays[0] <= 0.5 and all(d <= 30.0 for d in delays) and delays[-1] >= 21.0
    d = link.send("0200", env.debit())
    clock.advance(2.0)
    assert type(await failure_of(d)) is LinkDown


# --- echoes ----------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_echo_on_idle_both_ways_without_loops(env):
    host = env.host(Behaviour(echo_interval_s=0.05))
    clock = Clock()
    link = env.link(host, clock=clock, echo_interval_s=5.0)
    await link.when_ready()
    await until(lambda: host.counters["echo_answers"] >= 3)  # the bank echoes, the link answers
    assert link.stats["echoes_sent"] == 0 and host.counters["echoes_received"] == 0
    host.behaviour = Behaviour()  # the bank falls silent; the link echoes it when idle
    clock.advance(5.0)
    await until(lambda: link.stats["echoes_answered"] == 1)
    assert host.counters["echoes_received"] == 1
    await deferLater(reactor, 0.1, lambda: None)
    assert link.stats["echoes_sent"] == 1 and host.counters["echoes_received"] == 1


@pytest_twisted.ensureDeferred
async def test_unanswered_echo_closes_the_connection(env):
    host = env.host(Behaviour(answer_echo=False))
    clock = Clock()
    link = env.link(host, clock=clock, echo_interval_s=5.0, timeout_s=3.0)
    await link.when_ready()
    clock.advance(5.0)
    await until(lambda: host.counters["echoes_received"] == 1)
    clock.advance(3.0)
    await until(lambda: link.stats["connections_lost"] == 1)
    assert not link.ready and len(link.reconnect_delays) == 1


# --- answers that do not count ------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_answer_with_a_bad_mac_is_ignored(env):
    host = env.host(Behaviour(bad_mac_rate=1.0))
    link = env.link(host, timeout_s=0.2)
    await link.when_ready()
    assert type(await failure_of(link.send("0200", env.debit("A1", 10)))) is DebitTimeout
    assert link.stats["bad_mac"] == 1 and link.stats["answered_00"] == 0


@pytest_twisted.ensureDeferred
async def test_duplicate_answers_deliver_once(env):
    host = env.host(Behaviour(duplicate_rate=1.0))
    link = env.link(host)
    await link.when_ready()
    results = await defer.gatherResults([link.send("0200", env.debit("A1", 1 + i)) for i in range(5)])
    assert [m.fields["39"] for m in results] == ["00"] * 5
    await until(lambda: link.stats["unmatched"] == 5)


@pytest_twisted.ensureDeferred
async def test_91_from_the_bank_signs_on_again(env):
    host = env.host()
    link = env.link(host)
    await link.when_ready()
    host.keys.drop(BANK, "debit")  # the bank lost our key
    answer = await link.send("0200", env.debit("A1", 10))
    assert answer.fields["39"] == "91" and "128" not in answer.fields
    await until(lambda: link.stats["sign_ons"] == 2)
    assert (await link.send("0200", env.debit("A1", 10))).fields["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_same_identity_twice_in_flight_is_refused(env):
    host = env.host(Behaviour(latency_ms=20))
    link = env.link(host)
    await link.when_ready()
    fields = env.debit()
    first = link.send("0200", fields)
    assert isinstance(await failure_of(link.send("0200", dict(fields))), ValueError)
    assert (await first).fields["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_stop_fails_queued_and_in_flight(env):
    host = env.host(Behaviour(latency_ms=300))
    clock = Clock()
    link = env.link(host, clock=clock, max_in_flight=1)
    await link.when_ready()
    in_flight = link.send("0200", env.debit())
    queued = link.send("0200", env.debit())
    await link.stop()
    assert type(await failure_of(queued)) is LinkStopped
    assert type(await failure_of(in_flight)) is OutcomeUnknown
    assert type(await failure_of(link.send("0200", env.debit()))) is LinkStopped
    assert not link.connections


@pytest_twisted.ensureDeferred
async def test_prometheus_metrics(env):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    host = env.host()
    link = env.link(host)
    link.metrics = PrometheusLinkMetrics(registry)
    await link.when_ready()
    await link.send("0200", env.debit("POOR", 501))
    assert registry.get_sample_value("gridpay_debit_answers_total",
                                     {"bank": BANK, "mti": "0200", "response_code": "51"}) == 1
    assert registry.get_sample_value("gridpay_debit_requests_sent_total", {"bank": BANK, "mti": "0200"}) == 1


# --- message helpers and timing helpers ------------------------------------------------------------

def test_debit_fields_match_the_spec_vector():
    vector = next(v for v in json.loads(VECTORS.read_text())["vectors"]
                  if v["name"] == "direct debit request" and v["dialect"] == "ascii")
    fields = debit_fields(bank_code="01020000", transmitted="1123101530", stan="123", rrn="000000123456",
                          customer_no="0140580211", account_no="6222021001122334455",
                          bills=[("202609", 17568, 0), ("202610", 37535, 113)],
                          terminal_id="TERM0001", acceptor_id="BR4401000000001")
    assert fields == {k: v for k, v in vector["fields"].items() if k != "128"}


def test_reversal_fields_refer_to_the_original():
    original = debit_fields(bank_code="01020000", transmitted="1123101530", stan="000123", rrn="000000123456",
                            customer_no="C1", account_no="622", bills=[("202609", 500, 7)])
    rev = reversal_fields(original, transmitted="1123101600", stan="124")
    assert rev["90"] == "0200" + "000123" + "1123101530" + "00001020000" + "0" * 11 == \
        original_data("0200", "123", "1123101530", "01020000")
    assert len(rev["90"]) == 42
    assert (rev["4"], rev["37"], rev["32"], rev["11"], rev["7"], rev["12"], rev["13"]) == \
        ("000000000507", "000000123456", "01020000", "000124", "1123101600", "101600", "1123")
    assert rev["48"] == "CN002C1" and "102" not in rev
    with pytest.raises(ValueError):
        debit_fields(bank_code="1", transmitted="1123101530", stan="1", rrn="1", customer_no="C", account_no="A",
                     bills=[("202609", 500, 0)], amount=501)


def test_backoff_grows_with_jitter_to_the_cap():
    b = Backoff(0.5, 30.0, 2.0, 0.3, random.Random(1))
    delays = [b.next() for _ in range(12)]
    assert all(a < c for a, c in zip(delays[:6], delays[1:7]))
    assert all(0.7 * min(30.0, 0.5 * 2 ** i) <= d <= min(30.0, 0.5 * 2 ** i) for i, d in enumerate(delays))
    b.reset()
    assert b.next() <= 0.5


def test_token_bucket():
    clock = Clock()
    bucket = TokenBucket(10, clock, burst=2)
    assert [bucket.take(), bucket.take()] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)
    clock.advance(0.1)
    assert bucket.take() == 0.0 and bucket.take() > 0
    clock.advance(100)
    assert sum(bucket.take() == 0.0 for _ in range(5)) == 2  # never more than the burst
