"""Attack: malformed frames against a real ``gridpay serve`` in both dialects (docs/spec/INTERFACE.md §2, §6),
while honest banks pay on other connections.

Hostile connections send random bytes, truncated frames, bad length headers, bad bitmaps, bad
TPDUs and well-formed requests with one byte corrupted (the conformance vectors in
tests/spec/vectors.json and the harness's requests are the seed). Honest traffic must get every
answer right and in time, the ledger must hold exactly what the honest banks were told, the
gateway's memory stays bounded, and no hostile frame may raise an unexpected exception.
"""
from __future__ import annotations

import csv
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from attack_banks import HonestBank, answers_to_raw, hostile, raw_socket
from attack_harness import SCALE, RssWatch, assert_ledger_is_what_banks_were_told, payments_of, seed, serving
from gateway_harness import Bank
from iso8583_specs.framing import encode_frame
from ledger_helpers import assert_ledger_verifies

VECTORS = Path(__file__).parent / "spec" / "vectors.json"
FAKE_MAK = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")  # no bank's key: every MAC fails
ANSWERABLE = {"30", "40", "58", "91", "A0"}                       # what a hostile frame may be told
ATTACKERS = (("ascii", "01020000", 2), ("ascii", "01030000", 1), ("bcd", "01050000", 3))  # listener, bank, how many


# --- the hostile corpus ---------------------------------------------------------------------

def seeds(bank: str) -> list[bytes]:
    """Well-formed requests (ISO bytes, MAC under a key the gateway never issued): the harness's
    inquiry, payment and reversal for ``bank``, and the conformance vectors' requests of its
    dialect. Sign-ons and echoes are left out: a sign-on carries no MAC (§4.1), so a corrupted
    copy that still parsed would rightly give the bank a new key, and its honest connections A0."""
    build = Bank(None, None, bank)
    build.mak = FAKE_MAK
    payment = build.payment_fields("X00000001", 10050)
    own = [build.encode("0100", build.inquiry_fields("X00000001")), build.encode("0200", payment),
           build.encode("0420", build.reversal_fields(payment))]
    framing = build.dialect.framing
    skip = framing.header_len + (5 if framing.tpdu else 0)
    vectors = [bytes.fromhex(v["frame_hex"])[skip:] for v in json.loads(VECTORS.read_text())["vectors"]
               if v["dialect"] == build.dialect.name and v["mti"][2] in "02" and v["mti"] != "0800"]
    return own + vectors


class Corpus:
    """Hostile byte streams for one dialect, drawn at random (seeded: a failure can be replayed)."""

    def __init__(self, bank: str, rng: random.Random):
        self.dialect = Bank(None, None, bank).dialect
        self.framing = self.dialect.framing
        self.seeds = seeds(bank)
        self.rng = rng
        self.tpdu = bytes.fromhex("6000000001") if self.framing.tpdu else None
        self.kinds = [self.random_bytes, self.truncated, self.bad_header, self.bad_bitmap, self.corrupted,
                      self.corrupted, self.corrupted, self.bad_tpdu, self.keepalives, self.burst]

    def draw(self) -> bytes:
        return self.rng.choice(self.kinds)()

    def frame(self, iso: bytes, tpdu: bytes | None = None) -> bytes:
        return encode_frame(self.framing, iso, tpdu or self.tpdu)

    def seed(self) -> bytes:
        return self.rng.choice(self.seeds)

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1, 400))

    def truncated(self) -> bytes:
        whole = self.frame(self.seed())
        return whole[:self.rng.randint(1, len(whole) - 1)]

    def bad_header(self) -> bytes:
        body = self.seed()
        if self.framing.header == "ascii4":
            header = self.rng.choice([b"12a4", b"-012", b"+012", b" 120", b"0x10", b"\x00\x00\x00\x01",
                                      b"9999", b"4097", b"\xef\xbc\x91\xef"])
        else:
            header = self.rng.choice([0xFFFF, 4097, 1, 4, 0x8000]).to_bytes(2, "big")
        return header + (self.tpdu or b"") + body

    def bad_bitmap(self) -> bytes:
        iso = bytearray(self.seed())
        mti_len, bitmap_len = self.dialect.fields.mti_len, self.dialect.fields.bitmap_len
        if bitmap_len == 16:
            iso[mti_len:mti_len + 16] = bytes(self.rng.choice(b"0123456789ABCDEFGZ az\x00") for _ in range(16))
        else:
            iso[mti_len:mti_len + 8] = self.rng.randbytes(8)
        return self.frame(bytes(iso))

    def corrupted(self) -> bytes:
        iso = bytearray(self.seed())
        for _ in range(self.rng.choice((1, 1, 2, 3))):
            iso[self.rng.randrange(len(iso))] = self.rng.randrange(256)
        return self.frame(bytes(iso))

    def bad_tpdu(self) -> bytes:
        if not self.framing.tpdu:
            return self.corrupted()
        return self.frame(self.seed(), self.rng.choice([b"\x00" * 5, b"\x61\x00\x00\x00\x01",
                                                        self.rng.randbytes(5)]))

    def keepalives(self) -> bytes:
        return self.framing.header_len * b"\x00" * self.rng.randint(1, 200) + self.frame(self.seed())

    def burst(self) -> bytes:
        """Several frames in one write, the last one's header bad."""
        return b"".join(self.frame(self.seed()) for _ in range(self.rng.randint(2, 6))) + self.bad_header()


class Attacker(threading.Thread):
    """Connects, writes a few hostile streams, reads what comes back, hangs up; again and again."""

    def __init__(self, port: int, corpus: Corpus, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.corpus, self.stop = port, corpus, stop
        self.codes: Counter = Counter()
        self.wrong: list[str] = []
        self.sent = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                sock = raw_socket(self.port)
            except OSError as exc:
                self.wrong.append(f"could not connect: {exc}")
                self.stop.wait(0.1)
                continue
            with sock:
                for _ in range(self.corpus.rng.randint(1, 4)):
                    answers, closed = answers_to_raw(sock, self.corpus.dialect, self.corpus.draw(), 0.15)
                    self.sent += 1
                    self.judge(answers)
                    if closed:
                        break

    def judge(self, answers) -> None:
        for answer in answers:
            code = answer.fields.get("39")
            self.codes[code] += 1
            if code not in ANSWERABLE:
                self.wrong.append(f"a hostile {answer.mti} was answered {code}")


# --- honest load: the bank-counter simulator ----------------------------------------------

def receipts(path: Path) -> dict[str, tuple[str, int]]:
    with open(path) as fh:
        return {r["receipt"]: (r["customer"], int(r["amount"])) for r in csv.DictReader(fh) if r["kind"] == "paid"}


def simulate(gw, tmp_path: Path, listener: str, bank: str, customers: list[str]):
    """``gridpay sim counter`` paying ``customers``: every answer checked, each within the bank's
    request timeout (the simulator's --timeout)."""
    file = tmp_path / f"customers-{bank}.txt"
    file.write_text("\n".join(customers))
    return gw.sim(listener, bank, gw.tree["banks"][bank]["dialect"], file, tmp_path / f"receipts-{bank}.csv",
                  "--count", str(len(customers)), "--connections", "2", "--window", "2",
                  "--timeout", str(gw.request_timeout(bank)), background=True)


def finished(sim, what: str) -> dict:
    out, err = sim.communicate(timeout=300)
    report = json.loads(out.strip().splitlines()[-1])
    print(f"{what}: {report['payments']} payments, latency p50 {report['latency_ms']['p50']} ms, "
          f"p99 {report['latency_ms']['p99']} ms")
    assert report["mismatches"] == 0 and report["unanswered"] == 0 and report["connections_lost"] == 0, out + err
    return report


# --- the tests ------------------------------------------------------------------------------------

def test_malformed_frame_flood_in_both_dialects_leaves_honest_banks_served(tmp_path, db_url):
    """Attackers on both listeners, claiming the honest banks' own codes, while the simulator pays
    for 01020000 (ascii) and 01050000 (bcd) on connections of their own."""
    customers = seed(db_url, A=60 * SCALE, B=60 * SCALE)
    rng = random.Random(16)
    stop = threading.Event()
    with serving(tmp_path, db_url) as gw, RssWatch(gw.proc.pid) as rss:
        sims = [simulate(gw, tmp_path, "ascii", "01020000", customers["A"]),
                simulate(gw, tmp_path, "bcd", "01050000", customers["B"])]
        attackers = [Attacker(gw.ports[listener], Corpus(bank, random.Random(rng.random())), stop)
                     for listener, bank, many in ATTACKERS for _ in range(many)]
        for attacker in attackers:
            attacker.start()
        try:
            reports = [finished(sims[0], "ascii 01020000"), finished(sims[1], "bcd 01050000")]
        finally:
            stop.set()
            for attacker in attackers:
                attacker.join(30)
        tracebacks = gw.tracebacks()
    rss.assert_bounded("malformed-frame flood")
    print(f"hostile streams sent: {sum(a.sent for a in attackers)}; answers by code: "
          f"{dict(sum((a.codes for a in attackers), Counter()))}")
    assert all(r["payments"] > 0 for r in reports)
    assert_ledger_is_what_banks_were_told(db_url, {"01020000": receipts(tmp_path / "receipts-01020000.csv"),
                                                   "01050000": receipts(tmp_path / "receipts-01050000.csv")})
    assert_ledger_verifies(db_url)
    assert not [w for a in attackers for w in a.wrong]
    assert not tracebacks, f"{len(tracebacks)} unexpected exceptions, e.g. {tracebacks[:3]}"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One gateway on SQLite for the focused frame tests below, each with customers of its own."""
    tmp = tmp_path_factory.mktemp("frames")
    url = f"sqlite:///{tmp / 'gridpay.db'}"
    customers = iter(seed(url, C=100)["C"])
    with serving(tmp, url, **{bank: {"frame_timeout_s": 2} for bank in ("01020000", "01030000", "01050000")}) as gw:
        yield gw, url, customers


@pytest.mark.parametrize("bank", ["01020000", "01050000"])
def test_a_complete_frame_before_a_bad_header_is_answered(small, bank):
    """One write holds a whole request and then a length header that cannot be read: the request
    is answered (it was framed), then the connection is closed (§6: the next frame cannot be found)."""
    gw, _, customers = small
    honest = HonestBank(gw, bank)
    honest.sign_on()
    fields = honest.build.inquiry_fields(next(customers))
    bad = b"12a4" if honest.build.dialect.framing.header == "ascii4" else b"\xff\xff"
    frame = encode_frame(honest.build.dialect.framing, honest.build.encode("0100", fields), honest.wire.tpdu)
    answers, closed = answers_to_raw(honest.wire.sock, honest.build.dialect, frame + bad, honest.timeout)
    honest.close()
    assert closed
    assert [(a.identity, a.fields["39"]) for a in answers] == [((fields["7"], fields["11"], bank), "00")]


def test_a_bcd_frame_whose_tpdu_is_not_60_is_refused_or_answered_never_applied_in_silence(small):
    """§2.2: a TPDU is 60 + two NIIs. A payment under another TPDU must not be posted without the
    bank hearing of it: refused (nothing posted), or posted and answered; and no exception."""
    gw, url, customers = small
    mark = gw.log_size()
    honest = HonestBank(gw, "01050000")
    honest.sign_on()
    sent = []
    for tpdu in ("6100000001", "0000000001", "FF00010000"):
        customer = next(customers)
        iso = honest.build.encode("0200", honest.build.payment_fields(customer, 10050))
        sock = raw_socket(gw.ports["bcd"])
        sock.sendall(encode_frame(honest.build.dialect.framing, iso, bytes.fromhex(tpdu)))
        sent.append((customer, sock))
    told, deadline = {}, time.monotonic() + honest.timeout
    for customer, sock in sent:
        with sock:
            answers, _ = answers_to_raw(sock, honest.build.dialect, b"", deadline - time.monotonic(), enough=1)
        told.update({a.tlv.get("RN"): (customer, 10050) for a in answers if a.fields["39"] == "00"})
    honest.close()
    assert payments_of(url, [customer for customer, _ in sent]) == told
    assert not gw.tracebacks(mark)


def refused_on_a_live_link(small, bank: str, field: str, **change) -> list:
    """Sends a payment with ``field`` changed (``hostile``) on a signed-on link, then an honest
    payment on the same link: frames of one link are taken in order, so by its answer a posting of
    the hostile one, were there one, is committed. Returns what the hostile one was answered, having
    checked that it was not posted, raised nothing, and left the link serving."""
    gw, url, customers = small
    mark, customer = gw.log_size(), next(customers)
    honest = HonestBank(gw, bank)
    honest.sign_on()
    iso = hostile(honest.build, "0200", honest.build.payment_fields(customer, 10050), field, **change)
    answers, _ = answers_to_raw(honest.wire.sock, honest.build.dialect,
                                encode_frame(honest.build.dialect.framing, iso, honest.wire.tpdu), 1.0)
    honest.pay(next(customers))
    honest.close()
    assert payments_of(url, [customer]) == {} and not honest.problems, honest.problems
    assert not gw.tracebacks(mark)
    return [a.fields["39"] for a in answers]


@pytest.mark.parametrize("bank, field, data", [("01020000", "7", b"11\x003101530"), ("01020000", "11", b"0X0031"),
                                              ("01020000", "32", b"000001020000"), ("01050000", "11", b"\x0a\x00\x31"),
                                              ("01050000", "32", b"\x00\x00\x01\x05\x00\x00")])
def test_a_request_whose_identity_cannot_be_read_gets_no_answer_and_raises_nothing(small, bank, field, data):
    """§6: a request whose fields 7, 11 and 32 cannot be read gets no response (there is nothing to
    address one to): the gateway logs and counts it, and nothing in it may end in an exception."""
    assert refused_on_a_live_link(small, bank, field, data=data) in ([], ["30"])


@pytest.mark.parametrize("field, length", [("32", b"+8"), ("32", b" 8"), ("32", b"8 "),
                                           ("48", b"+21"), ("48", b" 21"), ("48", b"2_1")])
def test_a_length_prefix_with_a_sign_or_space_is_a_format_error(small, field, length):
    """§2.1: LLVAR and LLLVAR lengths are 2 or 3 ASCII digits. '+8', ' 8' or '2_1' are not digits,
    whatever Python's int() makes of them: answered 30 (or not at all), nothing posted."""
    assert refused_on_a_live_link(small, "01020000", field, length=length) in ([], ["30"])


def test_a_stream_of_requests_split_across_reads_is_not_cut_by_the_frame_timeout(small):
    """Several requests may be outstanding on one connection (§1). A bank streaming them, each of
    its writes ending inside a frame, completes every frame within a fraction of frame_timeout_s:
    the frame timer must time each frame, not the stream, and every request be answered."""
    gw, _, customers = small
    honest = HonestBank(gw, "01020000")
    honest.sign_on()
    customer, build = next(customers), honest.build
    pause = 0.05
    frames = [encode_frame(build.dialect.framing, build.encode("0100", build.inquiry_fields(customer)))
              for _ in range(int(2.5 * gw.tree["banks"]["01020000"]["frame_timeout_s"] / pause))]
    cuts = [sum(len(f) for f in frames[:n]) + len(frames[n]) // 2 for n in range(len(frames))]
    stream, cut_off = b"".join(frames), False
    for start, end in zip([0] + cuts, cuts + [len(stream)]):
        try:
            honest.wire.sock.sendall(stream[start:end])
        except OSError:
            cut_off = True
            break
        time.sleep(pause)
    answers, closed = answers_to_raw(honest.wire.sock, build.dialect, b"", honest.timeout, enough=len(frames))
    honest.close()
    assert not (cut_off or closed), "the gateway closed a connection whose every frame came whole in time"
    assert [a.fields["39"] for a in answers] == ["00"] * len(frames)
