"""Attack: hostile values and replays against a real ``gridpay serve`` (docs/spec/INTERFACE.md §3, §4.7, §6),
while honest banks pay on other connections.

- Replays: one payment's exact bytes 50 times (at once, over several connections, before and after
  it is answered) get its one answer again; the same identity with other content gets 94;
  nothing is posted twice.
- NUL, control bytes and oversized values in every field of a payment, in both dialects, MACed
  with the bank's real key: each is answered 30 (or, when fields 7, 11 or 32 cannot be read, not
  at all, or the connection is closed, §6), never posted, never an exception.
- A poisoned posting (a value PostgreSQL would refuse) sent at the same instant as other banks'
  payments: it is refused, they are approved.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import iso8583
from sqlalchemy import func, select

from attack_banks import HonestBank, HonestLoad, Wire, assert_honest_served, hostile, told_of
from attack_harness import SCALE, RssWatch, assert_ledger_is_what_banks_were_told, payments_of, seed, serving
from iso8583_specs import codec
from ledger.db import make_engine
from ledger.schema import reversals
from ledger_helpers import assert_ledger_verifies

A, B, C = "01020000", "01030000", "01050000"   # A and B ascii, C bcd
IDENTITY = ("7", "11", "32")                   # without them no answer can be addressed (§6)
BEFORE_32 = ("3", "4", "7", "11", "12", "13")  # fixed fields ahead of 32: one byte too many moves it
BUILDING = threading.Lock()


# --- replays ----------------------------------------------------------------------------------

def replay(gw, code: str, iso: bytes, fields: dict, times: int, connections: int) -> list:
    """The same bytes ``times`` times, spread over fresh connections, all written before any answer is read."""
    wires = [HonestBank(gw, code) for _ in range(connections)]
    for n in range(times):
        wires[n % connections].wire.send(iso)
    wanted = (fields["7"], fields["11"], fields["32"])
    answers = []
    for n, bank in enumerate(wires):
        deadline = time.monotonic() + bank.timeout
        for _ in range(len(range(n, times, connections))):
            frame = bank.wire.frame(deadline)
            assert frame is not None, "a replay's connection was closed"
            message = codec.decode(bank.build.dialect, frame.message)
            assert message.identity == wanted
            answers.append(message)
        bank.close()
    return answers


def reversal_count(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(reversals)).scalar_one()
    engine.dispose()
    return count


def test_replays_get_the_one_answer_and_other_content_under_the_identity_gets_94(tmp_path, db_url):
    customers = seed(db_url, R=3, B=30)
    times = 50 * SCALE
    with serving(tmp_path, db_url) as gw, RssWatch(gw.proc.pid) as rss:
        bank = HonestBank(gw, A)
        bank.sign_on()
        other = HonestBank(gw, B)
        other.sign_on()
        with HonestLoad((other, customers["B"])) as load:
            first, second, third = customers["R"]
            # a payment replayed before it was ever answered: the copies race the original
            racing = bank.build.payment_fields(first, 10050)
            raced = replay(gw, A, bank.build.encode("0200", racing), racing, times, connections=5)
            # a payment answered, then replayed
            paid = bank.build.payment_fields(second, 10050)
            answer = bank.checked(bank.ask("0200", paid), "payment")
            again = replay(gw, A, bank.build.encode("0200", paid), paid, times, connections=5)
            # other content under the answered payment's identity, and its RRN on a new request
            changed = [bank.ask("0200", {**paid, "4": "000000010051"}),
                       bank.ask("0200", {**paid, "48": f"CN{len(third):03d}{third}PM00201"}),
                       bank.ask("0200", {**bank.build.payment_fields(third, 10050), "37": paid["37"]})]
            # a reversal, replayed, and repeated as 0421
            undo = bank.build.reversal_fields(paid)
            reversed_ = bank.checked(bank.ask("0420", undo), "reversal")
            undone = replay(gw, A, bank.build.encode("0420", undo), undo, times, connections=5)
            repeat = bank.ask("0421", undo)
            load.finish()
    rss.assert_bounded("replays")
    receipts = {m.tlv.get("RN") for m in raced}
    assert [m.fields["39"] for m in raced] == ["00"] * times and len(receipts) == 1, [m.fields["39"] for m in raced]
    assert [(m.fields["39"], m.tlv.get("RN")) for m in again] == [("00", answer.tlv.get("RN"))] * times
    assert [m.fields["39"] for m in changed] == ["94"] * 3
    assert [m.fields["39"] for m in undone + [repeat]] == [reversed_.fields["39"]] * (times + 1) == ["00"] * (times + 1)
    assert payments_of(db_url, customers["R"]) == {receipts.pop(): (first, 10050), answer.tlv.get("RN"): (second, 10050)}
    assert reversal_count(db_url) == 1
    assert_honest_served(other)
    assert_ledger_verifies(db_url)


# --- hostile values in every field -------------------------------------------------------------

def text_cases(field: str, data: bytes) -> list[tuple[str, bytes]]:
    """an/ans fields, both dialects (GBK bytes on the wire)."""
    return [("NUL", data[:1] + b"\x00" + data[2:]), ("ESC", data[:1] + b"\x1b" + data[2:]),
            ("DEL", data[:-1] + b"\x7f"), ("not GBK", data[:-2] + b"\xff\xfe"), ("one byte too many", data + b"Z")]


def number_cases(field: str, data: bytes, packed: bool) -> list[tuple[str, bytes]]:
    if packed:   # bcd: a nibble that is no digit, a byte too many, a length beyond the field's
        cases = [("nibble A-F", b"\xaf" + data[1:])]
        longer = [("12 digits", b"\x00\x00" + data), ("empty", b"")] if field == "32" else \
            [("one byte too many", data + b"\x00")]
        return cases + longer
    cases = [("NUL", data[:1] + b"\x00" + data[2:]), ("SOH", data[:-1] + b"\x01"),
             ("letter", data[:1] + b"X" + data[2:])]
    longer = [("12 digits", b"0000" + data), ("empty", b"")] if field == "32" else \
        [("one digit too many", data + b"0")]
    return cases + longer


def field48_cases(customer: str) -> list[tuple[str, bytes]]:
    cn = customer.encode()
    return [("CN with NUL", b"CN%03d" % len(cn) + cn[:1] + b"\x00" + cn[2:] + b"PM00201"),
            ("CN of 21", b"CN021" + cn.ljust(21, b"0") + b"PM00201"),
            ("PM with ESC", b"CN%03d" % len(cn) + cn + b"PM0020\x1b"),
            ("TLV length past the end", b"CN099" + cn + b"PM00201"),
            ("TLV length signed", b"CN+%02d" % len(cn) + cn + b"PM00201"),
            ("unknown tag with NUL", b"CN%03d" % len(cn) + cn + b"PM00201ZZ003a\x00b"),
            ("not GBK", b"CN%03d" % len(cn) + cn + b"PM00201NM002\xff\xfe")]


FIELDS = ("3", "4", "7", "11", "12", "13", "32", "37", "41", "42", "48", "49")


def variants(build, fields: dict, field: str) -> dict[str, tuple[bytes | None, bytes | None]]:
    """The hostile forms of one field of this payment: what -> (data, length prefix)."""
    _, wire = iso8583.decode(build.encode("0200", fields), build.dialect.fields.spec)
    data, packed = wire[field]["data"], build.dialect.name == "bcd"
    if field == "48":
        short = len(data) - 1
        return {**{what: (value, None) for what, value in field48_cases(fields["48"][5:].split("PM")[0])},
                "LLL beyond the frame": (None, b"999" if not packed else b"\x09\x99"),
                "LLL one short": (None, b"%03d" % short if not packed else bytes.fromhex(f"{short:04d}"))}
    if field == "64":
        made = [("NUL", data[:1] + b"\x00" + data[2:]), ("not hexadecimal", data[:-1] + b"G"),
                ("one character too many", data + b"0")]
    elif field in ("37", "41", "42"):
        made = text_cases(field, data)
    else:
        made = number_cases(field, data, packed)
    return {what: (value, None) for what, value in made}


def cases(build) -> list[tuple[str, str]]:
    """(field, what) for every field of a payment and each of its hostile forms."""
    sample = build.payment_fields("H00000000", 10050)
    mac = ("64",) if build.dialect.fields.hex_mac else ()   # bcd: any 8 bytes are a MAC (a wrong one: A0)
    return [(field, what) for field in FIELDS + mac for what in variants(build, sample, field)]


def outcome(gw, attacker, listener: str, customer: str, case: tuple[str, str]) -> tuple[str, str, str]:
    """Send one hostile payment, then an echo on the same connection: what became of the payment."""
    field, what = case
    build = attacker.build
    with BUILDING:   # one STAN and RRN sequence per bank, shared by the attacking threads
        fields = build.payment_fields(customer, 10050)
        echo = {**build.head(), "70": "301"}
    data, length = variants(build, fields, field)[what]
    iso = hostile(build, "0200", fields, field, data=data, length=length)
    wire = Wire(gw.ports[listener], build.dialect, attacker.timeout)
    got = "silent"
    try:
        wire.send(iso)
        wire.send(build.encode("0800", echo, key=False))
        deadline = time.monotonic() + attacker.timeout
        echoed = False
        while True:
            frame = wire.frame(deadline if not echoed else min(deadline, time.monotonic() + 0.5))
            if frame is None:
                got = "closed" if got == "silent" else got
                break
            message = codec.decode(build.dialect, frame.message)
            if message.mti == "0810":
                echoed = True
                continue
            got = message.fields.get("39")
    except TimeoutError:
        pass
    finally:
        wire.close()
    return field, what, got


def allowed(field: str, what: str, got: str) -> bool:
    if got in ("30", "closed"):
        return True
    shifted = "too many" in what and field in BEFORE_32
    return got == "silent" and (field in IDENTITY or shifted)


def test_nul_control_bytes_and_oversized_values_in_every_field_are_refused(tmp_path, db_url):
    """Bank B (ascii) and bank C (bcd, on a connection of its own) send them; bank A and bank C's
    honest connection pay meanwhile."""
    customers = seed(db_url, A=40, C=40, H=200)
    hostile_customers = iter(customers["H"])
    with serving(tmp_path, db_url) as gw, RssWatch(gw.proc.pid) as rss:
        honest = [HonestBank(gw, A), HonestBank(gw, C)]
        for bank in honest:
            bank.sign_on()
        attacker_b = HonestBank(gw, B)
        attacker_b.sign_on()
        attacker_c = HonestBank(gw, C)
        attacker_c.build.mak = honest[1].build.mak   # bank C's own key: the MAC is right
        work = [(attacker, listener, next(hostile_customers), case)
                for attacker, listener in ((attacker_b, "ascii"), (attacker_c, "bcd"))
                for case in cases(attacker.build)]
        with HonestLoad((honest[0], customers["A"]), (honest[1], customers["C"])) as load:
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda w: (w[2], outcome(gw, *w)), work))
            load.finish()
        for attacker in (attacker_b, attacker_c):
            attacker.close()
        tracebacks = gw.tracebacks()
    rss.assert_bounded("hostile values")
    print("hostile values answered:", sorted({r for _, r in results}))
    wrong = [(customer, r) for customer, r in results if not allowed(*r)]
    assert not wrong, wrong
    assert payments_of(db_url, customers["H"]) == {}
    assert_honest_served(*honest)
    assert_ledger_is_what_banks_were_told(db_url, told_of(*honest))
    assert_ledger_verifies(db_url)
    assert not tracebacks, f"{len(tracebacks)} unexpected exceptions, e.g. {tracebacks[:3]}"


# --- a poisoned posting among other banks' ---------------------------------------------------------

PREFIX = {A: "A", B: "B", C: "C"}
POISONS = (("41", "TERM\x0001"), ("42", "BR44010\x0000001"), ("37", "00000\x1b000002"))


def test_pg_a_poisoned_payment_among_other_banks_payments_leaves_them_approved(tmp_path, pg_url):
    """Each round bank A sends a payment with a value PostgreSQL refuses (a NUL byte) at the same
    instant as banks B and C send theirs, one with a terminal id in Chinese (valid ans, GBK):
    A's is refused (30 before posting, or 96 if it ever reached the database), B's and C's approved."""
    rounds = 10 * SCALE
    customers = seed(pg_url, A=rounds, B=rounds, C=rounds)
    with serving(tmp_path, pg_url) as gw:
        banks = {code: HonestBank(gw, code) for code in (A, B, C)}
        for bank in banks.values():
            bank.sign_on()
        start = threading.Barrier(3)
        poisoned: list[str] = []

        def poison(n: int) -> None:
            field, value = POISONS[n % len(POISONS)]
            bank = banks[A]
            fields = bank.build.payment_fields(customers["A"][n], 10050)
            iso = hostile(bank.build, "0200", fields, field, data=value.encode())
            start.wait()
            poisoned.append(bank.ask_raw(iso, fields).fields["39"])

        def pay(code: str, n: int) -> None:
            bank = banks[code]
            customer = customers[PREFIX[code]][n]
            extra = {"41": "柜台一号"} if code == B else {}
            fields = {**bank.build.payment_fields(customer, 10050), **extra}
            start.wait()
            answer = bank.checked(bank.ask("0200", fields), f"payment {customer}")
            if answer.fields["39"] == "00":
                bank.approved[answer.tlv.get("RN")] = (customer, 10050)

        for n in range(rounds):
            threads = [threading.Thread(target=poison, args=(n,)),
                       threading.Thread(target=pay, args=(B, n)), threading.Thread(target=pay, args=(C, n))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
    assert len(poisoned) == rounds and set(poisoned) <= {"30", "96"}, poisoned
    assert len(banks[B].approved) == len(banks[C].approved) == rounds
    assert_honest_served(banks[B], banks[C])
    assert_ledger_is_what_banks_were_told(pg_url, told_of(banks[B], banks[C]))
    assert_ledger_verifies(pg_url)
