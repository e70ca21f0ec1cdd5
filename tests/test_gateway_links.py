"""Counter links under careless or hostile peers: whose a shared connection is, and one
connection's flood of pipelined requests beside other banks' traffic (docs/gateway.md)."""
import logging

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from gateway.sim.counter_load import BAD_AMOUNT, corrupt_amount
from gateway_harness import Bank, code_of, connected_bank, start_gateway, stop_all
from iso8583_specs.framing import encode_frame
from link_helpers import answer_to, expect, link_settings, sample_sum, tallied
from test_gateway_codes import CUSTOMER
from test_gateway_counter import STANDARD, seed


@pytest.fixture
def url(db_url):
    seed(db_url, STANDARD)
    return db_url


def malformed_payment(bank: Bank, field32: str) -> tuple[bytes, dict]:
    """A payment whose field 4 carries a letter (answered 30) and whose field 32 says ``field32``."""
    fields = {**bank.payment_fields(CUSTOMER, int(BAD_AMOUNT)), "32": field32}
    return corrupt_amount(bank.dialect, bank.encode("0200", fields, key=False)), fields


def opened(gw, bank: str) -> float:
    return gw.metrics.registry.get_sample_value("gridpay_connections", {"bank": bank})


# --- defect 2: a shared listener binds a connection only to its own banks, after checks ----------

@pytest_twisted.ensureDeferred
async def test_requests_answered_30_bind_no_connection_to_the_bank_they_name(url):
    """Five connections to the ascii listener send payments answered 30 that name 01050000 (a bcd
    listener's bank, limit 2): none is counted against 01050000, which still connects."""
    gw = await start_gateway(reactor, url, settings=link_settings(url, **{"01050000": {"max_connections": 2}}))
    noise, banks = [], []
    try:
        for _ in range(5):
            bank = await tallied(gw)
            noise.append(bank)
            iso, fields = malformed_payment(bank, "01050000")
            answer = await answer_to(bank, iso, fields)
            assert code_of(answer) == "30"
            assert "64" not in answer.message.fields  # no MAC under the key of a bank not on this link
        assert opened(gw, "01050000") == 0
        banks = [await connected_bank(reactor, gw, "01050000") for _ in range(2)]
        for bank in banks:
            assert code_of(await bank.send("0100", bank.inquiry_fields(CUSTOMER))) == "00"
        assert opened(gw, "01050000") == 2
    finally:
        await stop_all(gw, *noise, *banks)


@pytest_twisted.ensureDeferred
async def test_a_request_that_fails_its_checks_does_not_bind_a_shared_connection(url):
    """On the listener 01020000 and 01030000 share, a 30 naming 01030000 leaves the connection
    free: the 01020000 requests after it are served, and only they bind it."""
    gw = await start_gateway(reactor, url)
    bank = await tallied(gw)
    try:
        iso, fields = malformed_payment(bank, "01030000")
        assert code_of(await answer_to(bank, iso, fields)) == "30"
        assert opened(gw, "01030000") == 0 and opened(gw, "01020000") == 0
        await bank.sign_on()
        assert code_of(await bank.send("0100", bank.inquiry_fields(CUSTOMER))) == "00"
        assert opened(gw, "01020000") == 1 and opened(gw, "01030000") == 0
        answer = await bank.send("0100", {**bank.inquiry_fields(CUSTOMER), "32": "01030000"})
        assert code_of(answer) == "58"  # bound now: the connection speaks for 01020000 only
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_an_unknown_bank_code_is_answered(sqlite_url, caplog):
    """A 30 naming no configured bank is answered like any other, without an error."""
    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url)
    bank = await tallied(gw)
    try:
        for field32 in ("09990000", "1"):
            iso, fields = malformed_payment(bank, field32)
            answer = await answer_to(bank, iso, fields)
            assert code_of(answer) == "30" and answer.message.fields["32"] == field32
        answer = await bank.send("0800", {**bank.head(), "70": "301"}, key=False)
        assert code_of(answer) == "00"  # the connection is still up and still free
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await stop_all(gw, bank)


# --- one connection's flood of pipelined requests ------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_flooding_connection_is_held_to_its_outstanding_cap_while_others_are_served(url):
    """One connection writes 600 inquiries without waiting; the gateway takes at most the default
    64 of them at a time from it (reading the rest as answers go out), and another bank's inquiry,
    sent after the flood, is answered before the flood is."""
    gw = await start_gateway(reactor, url)
    flood = await connected_bank(reactor, gw, "01020000")
    other = await connected_bank(reactor, gw, "01050000")
    peak, now = {}, {}
    handle = gw.service.handle

    async def counted(ex, link):
        now[id(link)] = now.get(id(link), 0) + 1
        peak[id(link)] = max(peak.get(id(link), 0), now[id(link)])
        try:
            return await handle(ex, link)
        finally:
            now[id(link)] -= 1

    gw.service.handle = counted
    try:
        answered = []
        requests = [defer.ensureDeferred(flood.send("0100", flood.inquiry_fields(CUSTOMER))) for _ in range(600)]
        for d in requests:
            d.addCallback(lambda answer: answered.append(code_of(answer)) or answer)
        assert code_of(await other.send("0100", other.inquiry_fields(CUSTOMER))) == "00"
        assert len(answered) < 600
        await defer.gatherResults(requests)
        assert answered == ["00"] * 600
        assert max(peak.values()) == 64
    finally:
        await stop_all(gw, flood, other)


@pytest_twisted.ensureDeferred
async def test_a_link_at_its_cap_is_not_read_and_is_neither_idle_nor_mid_frame(sqlite_url):
    """max_outstanding_requests = 4, requests held in the gateway: the fifth onwards wait unread
    (the last one half sent), through the idle and frame timeouts, and are taken in order as
    answers go out."""
    seed(sqlite_url, STANDARD)
    clock = task.Clock()
    gw = await start_gateway(reactor, sqlite_url, clock=clock, settings=link_settings(
        sqlite_url, **{"01020000": {"max_outstanding_requests": 4, "idle_timeout_s": 30}}))
    bank = await connected_bank(reactor, gw)
    gate, taken, handle = defer.Deferred(), [], gw.service.handle

    async def held(ex, link):
        taken.append(ex)
        await gate
        return await handle(ex, link)

    gw.service.handle = held
    try:
        sent = [bank.inquiry_fields(CUSTOMER) for _ in range(10)]
        answers = [defer.ensureDeferred(bank.send("0100", f)) for f in sent[:9]]
        last = encode_frame(bank.dialect.framing, bank.encode("0100", sent[9]))
        bank.client.transport.write(last[:20])
        await task.deferLater(reactor, 0.2)
        assert len(taken) == 4
        clock.advance(31)  # past idle_timeout_s and frame_timeout_s (10)
        await task.deferLater(reactor, 0.1)
        assert not bank.client.closed.called
        bank.client.transport.write(last[20:])
        answers.append(expect(bank, sent[9]))
        gate.callback(None)
        done = await defer.gatherResults(answers)
        assert [code_of(a) for a in done] == ["00"] * 10
        assert [ex.fields["11"] for ex in taken] == [f["11"] for f in sent]
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_frames_before_a_bad_length_header_are_answered_then_the_link_closes(sqlite_url):
    """The connection closes when the next frame cannot be found (docs/spec/INTERFACE.md §6), after
    the complete frames before it in the same read are taken and answered."""
    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url)
    bank = await connected_bank(reactor, gw)
    try:
        fields = bank.inquiry_fields(CUSTOMER)
        waiting = expect(bank, fields)
        bank.client.transport.write(encode_frame(bank.dialect.framing, bank.encode("0100", fields)) + b"ABCD")
        assert code_of(await waiting.addTimeout(10, reactor)) == "00"  # a hang guard, not a timing
        await bank.client.closed.addTimeout(10, reactor)
        assert sample_sum(gw, "gridpay_format_errors_total", bank="01020000") == 1
    finally:
        await stop_all(gw, bank)
