"""Frames the gateway cannot answer: dropped, counted and logged once, within a log allowance no
input can outrun (docs/gateway.md, docs/spec/INTERFACE.md §6)."""
import logging
import random

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from gateway.sim.counter_load import BAD_AMOUNT, corrupt_amount
from gateway_harness import Bank, code_of, start_gateway, stop_all
from iso8583_specs import codec
from iso8583_specs.errors import MessageError
from iso8583_specs.framing import encode_frame
from link_helpers import LogFile, sample_sum, tallied
from test_gateway_codes import CUSTOMER, DUE
from test_gateway_counter import STANDARD, seed


@pytest.fixture
def url(db_url):
    seed(db_url, STANDARD)
    return db_url


def spoiled(iso: bytes, good: str, bad: str) -> bytes:
    assert good.encode() in iso
    return iso.replace(good.encode(), bad.encode(), 1)


def unanswerable_frames(bank: Bank) -> dict[str, bytes]:
    """ASCII requests whose MTI or identity fields were read but cannot be sent back."""
    pay = bank.payment_fields(CUSTOMER, DUE)
    pay["11"] = "424242"
    iso = bank.encode("0200", pay, key=False)
    broken = corrupt_amount(bank.dialect, bank.encode("0200", {**pay, "4": BAD_AMOUNT}, key=False))
    return {
        "field 7 not digits": spoiled(iso, pay["7"], pay["7"][:-1] + "X"),
        "field 11 not digits": spoiled(iso, "424242", "42424X"),
        "field 32 not digits": spoiled(iso, "0801020000", "080102000X"),
        "MTI 9999, a field broken": b"9999" + broken[4:],
        "MTI 9999, all fields good": b"9999" + iso[4:],
        "a response MTI, a field broken": b"0210" + broken[4:],
    }


def tx_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gridpay.tx"]


@pytest_twisted.ensureDeferred
async def test_frames_whose_identity_cannot_be_answered_are_dropped_and_said_once(sqlite_url, caplog):
    seed(sqlite_url, STANDARD)
    caplog.set_level(logging.INFO)
    gw = await start_gateway(reactor, sqlite_url)
    bank = await tallied(gw)
    try:
        await bank.sign_on()
        frames = unanswerable_frames(bank)
        for what, iso in frames.items():
            caplog.clear()
            before = len(bank.client.seen)
            bank.client.send_raw(iso)
            echo = await bank.send("0800", {**bank.head(), "70": "301"}, key=False)  # same connection, after it
            assert code_of(echo) == "00", what
            assert len(bank.client.seen) == before + 1, f"{what}: answered"
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], what
            dropped = [line for line in tx_lines(caplog) if '"rc": null' in line]
            assert len(dropped) == 1 and '"rc": "30"' not in "".join(tx_lines(caplog)), (what, tx_lines(caplog))
            assert len([r for r in caplog.records if r.name != "gridpay.tx"]) <= 1, what  # one line at most besides
        assert not sample_sum(gw, "gridpay_transactions_total", response_code="30")  # none answered 30
        dropped = {reason: sample_sum(gw, "gridpay_requests_dropped_total", bank="01020000", reason=reason)
                   for reason in ("unanswerable", "response")}
        assert dropped == {"unanswerable": len(frames) - 1, "response": 1}
    finally:
        await stop_all(gw, bank)



async def log_growth(log: LogFile, bank: Bank, frames: list[bytes], rounds: int = 200) -> tuple[int, int]:
    """(log bytes written, bytes sent) for ``rounds`` times ``frames`` on the bank's connection."""
    start, sent = log.size(), 0
    for _ in range(rounds):
        for iso in frames:
            frame = encode_frame(bank.dialect.framing, iso)
            bank.client.transport.write(frame)
            sent += len(frame)
    echo = await bank.send("0800", {**bank.head(), "70": "301"}, key=False)  # all were read before it
    assert code_of(echo) == "00"
    await settled(bank.gateway)
    return log.size() - start, sent


async def settled(gw, timeout: float = 10.0) -> None:
    """Until the gateway holds no request: a connection's requests run side by side, so the answer
    to the last one sent can leave before the answers (and log lines) of those sent before it."""
    for _ in range(int(timeout / 0.01)):
        if not sample_sum(gw, "gridpay_in_flight_requests"):
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("requests still in flight")


@pytest_twisted.ensureDeferred
async def test_the_log_grows_at_most_a_small_multiple_of_hostile_input(sqlite_url, tmp_path):
    """Hostile frames on one connection, each the cheapest of its kind: the log (the daemon's
    format, every logger) grows by at most the bytes sent for frames dropped unanswered (plus the
    connection's 4 KB start), and by a few times the bytes sent for frames answered 30, 40, 58."""
    seed(sqlite_url, STANDARD)
    log = LogFile(tmp_path / "gateway.log")
    gw = await start_gateway(reactor, sqlite_url)
    bank = await tallied(gw)
    try:
        await bank.sign_on()
        identity = {k: v for k, v in bank.head().items() if k in ("7", "11", "32")}
        dropped = [b"X", b"0200", *unanswerable_frames(bank).values(),
                   bank.encode("0810", {**identity, "39": "00", "70": "301"}, key=False)]
        written, sent = await log_growth(log, bank, dropped)
        assert written <= sent + 8192, (written, sent)
        assert sample_sum(gw, "gridpay_requests_dropped_total", bank="01020000") == 200 * (len(dropped) - 1)
        answered = [bank.encode("0800", {**identity, "32": "9", "70": "301"}, key=False),  # 58
                    bank.encode("0800", {**identity, "70": "301"}, key=False).replace(b"301", b"30X"),  # 30
                    bank.encode("0800", {**identity, "70": "999"}, key=False)]  # 40
        written, sent = await log_growth(log, bank, answered)
        assert written <= 6 * sent, (written, sent)
        assert sample_sum(gw, "gridpay_transactions_total", bank="01020000", mti="0800") >= 3 * 200
    finally:
        await stop_all(gw, bank)
        log.close()


def mutations(seeds: list[bytes], count: int, seed: int):
    """``count`` frames, each a seed with a few bytes changed, dropped or added (reproducible)."""
    rng = random.Random(seed)
    for _ in range(count):
        iso = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos, op = rng.randrange(len(iso)), rng.random()
            if op < 0.5:
                iso[pos] = rng.randrange(256)
            elif op < 0.7:
                del iso[pos]
            elif op < 0.85:
                iso.insert(pos, rng.randrange(256))
            else:
                iso[pos] = rng.choice(b"0123456789AX ")
        yield bytes(iso)


def consumed_silently(dialect, iso: bytes) -> bool:
    """An 0810 the gateway reads as the answer to its echo: neither answered nor dropped."""
    try:
        return codec.decode(dialect, iso).mti == "0810"
    except MessageError:
        return False


@pytest.mark.parametrize("code", ["01020000", "01050000"])
@pytest_twisted.ensureDeferred
async def test_no_frame_makes_the_gateway_fail(sqlite_url, caplog, code):
    """Mutated requests: each is answered with its own 7, 11 and 32, or
    dropped and counted; never an error (the old code logged tracebacks for dozens of these), and
    the connection serves on."""
    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url)
    bank = await tallied(gw, code)
    try:
        await bank.sign_on()
        seeds = [bank.encode("0200", bank.payment_fields(CUSTOMER, DUE)),
                 bank.encode("0100", bank.inquiry_fields(CUSTOMER)),
                 bank.encode("0800", {**bank.head(), "70": "301"}, key=False)]
        silent, sent = 0, 0
        for iso in mutations(seeds, 1500, seed=16):   # (a TPDU not 60 closes the link: test_gateway_framing.py)
            bank.client.send_raw(iso)
            sent += 1
            silent += consumed_silently(bank.dialect, iso)
        caplog.clear()
        echo = {**bank.head(), "70": "301"}
        assert code_of(await bank.send("0800", echo, key=False)) == "00"
        for _ in range(200):  # some wait for a key read on the pool: until none is in the gateway
            if not gw.in_flight():
                break
            await task.deferLater(reactor, 0.05)

        def answers():  # all but the sign-on's and the echo's (one of them: a mutant may share its STAN)
            seen = bank.client.seen[1:]
            echoed = next(i for i, a in enumerate(seen) if a.mti == "0810" and a.fields.get("11") == echo["11"])
            return seen[:echoed] + seen[echoed + 1:]

        def accounted():
            return len(answers()) + sample_sum(gw, "gridpay_requests_dropped_total") + silent

        for _ in range(100):  # their answers, written, reach the bank (slowly on a loaded machine)
            if accounted() >= sent:
                break
            await task.deferLater(reactor, 0.05)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert all(a.mti[2] in "13" and a.fields.get("39") for a in answers())
        assert accounted() == sent
    finally:
        await stop_all(gw, bank)
