"""Frames the gateway cannot trust, over real sockets: the counter channel against the in-process
gateway, and the debit link against the bank host simulator.

docs/spec/INTERFACE.md §2.2 (the TPDU is `60` + two NIIs) and §6 (a request that cannot be parsed far
enough gets no response; the gateway logs it, counts it, and closes the connection when it cannot
find the next frame). docs/wire.md says what the framer decides.
"""
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.protocols import portforward

from gateway_harness import code_of, connected_bank, start_gateway, stop_all
from iso8583_specs.framing import encode_frame
from test_debit_link import env, until  # noqa: F401 - env is a fixture
from test_gateway_codes import CUSTOMER, DUE, payments_count
from test_gateway_counter import STANDARD, seed

BCD_BANK = "01050000"
GOOD_TPDU = bytes.fromhex("6000000001")
CLOSE_WAIT_S = 10  # a bound on waiting for the close, so that a gateway that never closes fails the test


@pytest.fixture
def url(db_url):
    seed(db_url, STANDARD)
    return db_url


def format_errors(gw, bank: str) -> float:
    return gw.metrics.format_errors.labels(bank)._value.get()


def send_bytes(bank, fields: dict, data: bytes) -> defer.Deferred:
    """Writes ``data`` in one write and waits for the answer to the request ``fields``."""
    answer = defer.Deferred()
    bank.client.waiting[(fields["7"], fields["11"], fields["32"])] = (answer, time.perf_counter())
    bank.client.transport.write(data)
    return answer


async def closed_by_gateway(bank) -> None:
    await bank.client.closed.addTimeout(CLOSE_WAIT_S, reactor)


async def unanswered(answer: defer.Deferred) -> bool:
    try:
        await answer
    except ConnectionError:  # the client fails what is still waiting when the connection goes
        return True
    return False


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("tpdu", ["6100010000", "0000010000", "FF00010000"])
async def test_a_bcd_request_whose_tpdu_is_not_60_is_not_applied_and_closes_the_link(url, tpdu):
    gw = await start_gateway(reactor, url)
    bank = await connected_bank(reactor, gw, BCD_BANK)
    try:
        errors = format_errors(gw, BCD_BANK)
        fields = bank.payment_fields(CUSTOMER, DUE)
        iso = bank.encode("0200", fields)
        for _attempt in ("request", "its repeat"):
            answer = send_bytes(bank, fields, encode_frame(bank.dialect.framing, iso, bytes.fromhex(tpdu)))
            await closed_by_gateway(bank)
            assert await unanswered(answer)
            assert payments_count(url) == 0
            await bank.connect()
        assert format_errors(gw, BCD_BANK) == errors + 2
        # Nothing was applied, so the same request under a proper TPDU is a new payment, answered.
        answer = await send_bytes(bank, fields, encode_frame(bank.dialect.framing, iso, GOOD_TPDU))
        assert code_of(answer) == "00"
        assert payments_count(url) == 1
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_a_sign_on_whose_tpdu_is_not_60_gets_no_key(url):
    gw = await start_gateway(reactor, url)
    bank = await connected_bank(reactor, gw, BCD_BANK, sign_on=False)
    try:
        fields = {**bank.head(), "70": "001"}
        iso = bank.encode("0800", fields, key=False)
        answer = send_bytes(bank, fields, encode_frame(bank.dialect.framing, iso, bytes.fromhex("6800010000")))
        await closed_by_gateway(bank)
        assert await unanswered(answer)
        assert format_errors(gw, BCD_BANK) == 1
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("bad_header", [b"00x1", b"+012", b"9999"])
async def test_a_frame_before_a_bad_length_header_is_answered_then_the_link_closes(url, bad_header):
    gw = await start_gateway(reactor, url)
    bank = await connected_bank(reactor, gw)
    try:
        fields = bank.payment_fields(CUSTOMER, DUE)
        frame = encode_frame(bank.dialect.framing, bank.encode("0200", fields))
        answer = await send_bytes(bank, fields, frame + bad_header + b"garbage")
        assert code_of(answer) == "00" and bank.mac_ok(answer)
        assert payments_count(url) == 1
        await closed_by_gateway(bank)
        assert format_errors(gw, "01020000") == 1
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_a_bcd_frame_before_a_bad_tpdu_is_answered_then_the_link_closes(url):
    gw = await start_gateway(reactor, url)
    bank = await connected_bank(reactor, gw, BCD_BANK)
    try:
        good = bank.payment_fields(CUSTOMER, DUE)
        bad = bank.inquiry_fields(CUSTOMER)
        framing = bank.dialect.framing
        data = (encode_frame(framing, bank.encode("0200", good), GOOD_TPDU)
                + encode_frame(framing, bank.encode("0100", bad), bytes.fromhex("6100010000")))
        bad_answer = send_bytes(bank, bad, b"")
        answer = await send_bytes(bank, good, data)
        assert code_of(answer) == "00" and answer.message.fields["11"] == good["11"]
        await closed_by_gateway(bank)
        assert await unanswered(bad_answer)
        assert payments_count(url) == 1
    finally:
        await stop_all(gw, bank)


# --- the debit link: the bank's answers before a bad header are taken ----------------------

class _GarbleAfterFirst(portforward.ProxyClient):
    """Passes the bank host's bytes on, with a bad length header after every read but the first
    (the sign-on answer), in the same write as the answer before it."""
    reads = 0

    def dataReceived(self, data: bytes) -> None:
        self.reads += 1
        super().dataReceived(data + (b"00x1" if self.reads > 1 else b""))


class _GarblingClientFactory(portforward.ProxyClientFactory):
    protocol = _GarbleAfterFirst


class _GarblingServer(portforward.ProxyServer):
    clientProtocolFactory = _GarblingClientFactory


@pytest_twisted.ensureDeferred
async def test_a_debit_answer_before_a_bad_length_header_is_taken_then_the_link_closes(env):
    host = env.host()
    factory = portforward.ProxyFactory("127.0.0.1", host.port)
    factory.protocol = _GarblingServer
    proxy = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        link = env.link(proxy.getHost().port)
        await link.when_ready()
        answer = await link.send("0200", env.debit("A1", 1234))
        assert answer.fields["39"] == "00" and host.accounts["A1"].balance == 10_000_000 - 1234
        await until(lambda: link.stats["framing_errors"] == 1)
        assert link.stats["outcome_unknown"] == 0
    finally:
        await proxy.stopListening()
